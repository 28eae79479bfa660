"""Engine results as ws_v1 messages, encoded and decoded in both protocols."""

from __future__ import annotations

import json

from hostnode.subscriptions import SubscribeApplied, SubscribeMultiApplied, SubscriptionError, wire
from sats import ws_v1 as ws
from tests.hostnode.subscriptions.conftest import SubDb, U


def test_replies_and_commit_updates_in_both_protocols(partd: SubDb) -> None:
    c = partd.connect()
    tables = partd.ds.tables()
    as_json = wire.json_rows(tables)
    single = partd.request("subscribe_single", c, "SELECT * FROM pet", 1, 2)
    multi = partd.request("subscribe_multi", c, ["SELECT * FROM person"], 3, 4)
    error = partd.request("subscribe_multi", c, ["SELECT * FROM nope"], 5, 6)
    assert isinstance(single, SubscribeApplied) and isinstance(multi, SubscribeMultiApplied)
    assert isinstance(error, SubscriptionError)
    for result in (single, multi, error):
        msg = wire.reply(result, wire.bsatn_rows)
        assert ws.decode_server_message_bsatn(ws.encode_server_message_bsatn(msg)) == msg
        jmsg = wire.reply(result, as_json)
        assert ws.decode_server_message_json(ws.encode_server_message_json(jmsg)) == jmsg
    msg = wire.reply(single, wire.bsatn_rows)
    assert isinstance(msg, ws.SubscribeApplied) and msg.query_id == ws.QueryId(2)
    assert list(msg.rows.table_rows.updates[0].inserts) == list(single.rows.updates[0].inserts)
    jmsg = wire.reply(single, as_json)
    assert isinstance(jmsg, ws.SubscribeApplied)
    kinds = sorted(json.loads(x)["kind"] for x in jmsg.rows.table_rows.updates[0].inserts)  # rows keyed by column
    assert kinds == ["cat", "dog", "fish"]
    out = partd.replace("pet", (10, 1, "cat"), (10, 1, "lion"))
    upd = wire.database_update(out.update_for(c), wire.bsatn_rows)
    (tu,) = upd.tables
    assert (tu.table_name, tu.num_rows) == ("pet", 2)
    assert [partd.decode("pet", r) for r in tu.updates[0].deletes] == [(10, 1, "cat")]


def test_one_off_response(partd: SubDb) -> None:
    with partd.view() as tx:
        ok = partd.mgr.one_off(tx, U, "SELECT * FROM pet WHERE id = 10")
        bad = partd.mgr.one_off(tx, U, "SELECT * FROM nope")
    msg = wire.one_off_response(b"\x01\x02", ok, wire.bsatn_rows)
    assert msg.error is None and [t.table_name for t in msg.tables] == ["pet"] and len(msg.tables[0].rows) == 1
    assert ws.decode_server_message_bsatn(ws.encode_server_message_bsatn(msg)) == msg
    msg = wire.one_off_response(b"\x01\x02", bad, wire.bsatn_rows)
    assert msg.error is not None and msg.error.startswith("no such table") and msg.tables == ()
