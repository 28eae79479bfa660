"""Tests for hostnode/moduledef.py, the C modules' describe output and the modules build."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import wasmtime

from hostnode.moduledef import (
    I128_MAX,
    IndexAlgorithm,
    Lifecycle,
    ModuleDefError,
    RawConstraintDefV9,
    RawIndexDefV9,
    RawModuleDefV9,
    RawReducerDefV9,
    RawRowLevelSecurityDefV9,
    RawScheduleDefV9,
    RawScopedTypeNameV9,
    RawSequenceDefV9,
    RawTableDefV9,
    RawTypeDefV9,
    TableAccess,
    TableType,
    decode_raw_module_def,
    encode_raw_module_def,
    load_module_def,
    to_schema_json,
    validate,
)
from sats.types import (
    BOOL,
    IDENTITY,
    SCHEDULE_AT,
    STRING,
    U32,
    U64,
    Ref,
    Typespace,
    option,
    product,
)
from tests.modules_harness import MODULES_DIR, describe, official_module

REPO = Path(__file__).resolve().parents[2]

# module-abi.md §11.7, byte for byte.
SPEC_EXAMPLE = bytes.fromhex(
    "01"
    "01000000" "0202000000" "0002000000" "69640d" "0004000000" "6e616d6504"
    "01000000" "06000000706572736f6e" "00000000" "010000000000"
    "01000000" "01" "00020000006964" "00010000000000"
    "01000000" "0100010000000000"
    "01000000" "010000010101" "01000000000000000000000000000000"
    "01" "01" "00"
    "01000000" "03000000616464" "0100000000040000006e616d6504" "01"
    "01000000" "0000000006000000506572736f6e0000000001"
    "00000000"
    "00000000"
)  # fmt: skip

# module-abi.md §12, the same module as served by /schema?version=9.
SPEC_SCHEMA_JSON = """
{"typespace":{"types":[{"Product":{"elements":[
   {"name":{"some":"id"},"algebraic_type":{"U64":[]}},
   {"name":{"some":"name"},"algebraic_type":{"String":[]}}]}}]},
 "tables":[{"name":"person","product_type_ref":0,"primary_key":[0],
   "indexes":[{"name":{"some":"person_id_idx_btree"},"accessor_name":{"some":"id"},"algorithm":{"BTree":[0]}}],
   "constraints":[{"name":{"some":"person_id_key"},"data":{"Unique":{"columns":[0]}}}],
   "sequences":[{"name":{"some":"person_id_seq"},"column":0,"start":{"none":[]},
                 "min_value":{"none":[]},"max_value":{"none":[]},"increment":1}],
   "schedule":{"none":[]},"table_type":{"User":[]},"table_access":{"Public":[]}}],
 "reducers":[{"name":"add","params":{"elements":[{"name":{"some":"name"},"algebraic_type":{"String":[]}}]},
              "lifecycle":{"none":[]}}],
 "types":[{"name":{"scope":[],"name":"Person"},"ty":0,"custom_ordering":true}],
 "misc_exports":[],"row_level_security":[]}
"""


# ---------------------------------------------------------------------------------- the spec vector


def test_spec_example_is_169_bytes_and_decodes() -> None:
    assert len(SPEC_EXAMPLE) == 169
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    assert raw.typespace.types == [product(("id", U64), ("name", STRING))]
    (t,) = raw.tables
    assert t == RawTableDefV9(
        name="person",
        product_type_ref=0,
        primary_key=(0,),
        indexes=(RawIndexDefV9(None, "id", IndexAlgorithm.BTREE, (0,)),),
        constraints=(RawConstraintDefV9(None, (0,)),),
        sequences=(RawSequenceDefV9(None, 0, None, None, None, 1),),
        schedule=None,
        table_type=TableType.USER,
        table_access=TableAccess.PUBLIC,
    )
    assert raw.reducers == (RawReducerDefV9("add", product(("name", STRING)), None),)
    assert raw.types == (RawTypeDefV9(RawScopedTypeNameV9((), "Person"), 0, True),)
    assert raw.misc_exports == () and raw.row_level_security == ()
    assert encode_raw_module_def(raw) == SPEC_EXAMPLE


def test_spec_example_validates_with_generated_names() -> None:
    md = load_module_def(SPEC_EXAMPLE)
    person = md.table("person")
    assert person is not None
    assert person.primary_key == 0
    assert [(i.name, i.columns, i.unique, i.algorithm) for i in person.indexes] == [
        ("person_id_idx_btree", (0,), True, IndexAlgorithm.BTREE)
    ]
    assert [c.name for c in person.constraints] == ["person_id_key"]
    (seq,) = person.sequences
    assert seq.name == "person_id_seq"
    assert (seq.effective_start, seq.effective_min, seq.effective_max, seq.increment) == (1, 1, I128_MAX, 1)
    assert person.row_type == product(("id", U64), ("name", STRING))
    assert [(r.id, r.name, r.lifecycle) for r in md.reducers] == [(0, "add", None)]
    assert md.reducer("add") is not None and md.reducer("nope") is None
    assert md.index("person_id_idx_btree") == (person, person.indexes[0])


def test_spec_example_schema_json_matches_exactly() -> None:
    got = to_schema_json(load_module_def(SPEC_EXAMPLE))
    assert got == json.loads(SPEC_SCHEMA_JSON)
    # Key order matters for byte-compatible output, too.
    assert json.dumps(got, separators=(",", ":")) == json.dumps(
        json.loads(SPEC_SCHEMA_JSON), separators=(",", ":")
    )


def test_trailing_bytes_are_ignored() -> None:
    assert decode_raw_module_def(SPEC_EXAMPLE + b"\xff\x00junk") == decode_raw_module_def(SPEC_EXAMPLE)


@pytest.mark.parametrize(("tag", "name"), [(0, "V8BackCompat"), (2, "V10")])
def test_other_versions_are_rejected(tag: int, name: str) -> None:
    with pytest.raises(ModuleDefError, match=f"unsupported module definition version {name}"):
        decode_raw_module_def(bytes([tag]) + SPEC_EXAMPLE[1:])


def test_truncated_def_is_a_module_def_error() -> None:
    with pytest.raises(ModuleDefError, match="malformed module definition"):
        decode_raw_module_def(SPEC_EXAMPLE[:100])
    with pytest.raises(ModuleDefError, match="invalid RawModuleDef tag 9"):
        decode_raw_module_def(b"\x09")


# ---------------------------------------------------------------------------------- our modules


def _module_def(name: str) -> tuple[bytes, RawModuleDefV9]:
    sink = describe(MODULES_DIR / name / f"{name}.wasm").sink
    raw = decode_raw_module_def(sink)
    assert encode_raw_module_def(raw) == sink
    return sink, raw


def test_quickstart_chat_module_def() -> None:
    _, raw = _module_def("quickstart-chat")
    md = validate(raw)
    assert [t.name for t in md.tables] == ["message", "user"]
    user = md.table("user")
    assert user is not None and user.is_public and user.primary_key == 0
    assert user.row_type == product(("identity", IDENTITY), ("name", option(STRING)), ("online", BOOL))
    assert [(i.name, i.accessor_name, i.unique) for i in user.indexes] == [
        ("user_identity_idx_btree", "identity", True)
    ]
    assert [r.name for r in md.reducers] == [
        "identity_connected",
        "identity_disconnected",
        "init",
        "send_message",
        "set_name",
    ]


def test_transfer_module_def() -> None:
    _, raw = _module_def("transfer")
    md = validate(raw)
    (accounts,) = md.tables
    assert accounts.name == "accounts" and accounts.is_public
    assert [(i.name, i.unique) for i in accounts.indexes] == [("accounts_id_idx_btree", True)]
    assert [(r.name, [e.name for e in r.params.elements]) for r in md.reducers] == [
        ("seed", ["n", "initial_balance"]),
        ("transfer", ["from", "to", "amount"]),
    ]


def test_module_test_module_def() -> None:
    _, raw = _module_def("module-test")
    md = validate(raw)
    names = {t.name for t in md.tables}
    assert names >= {
        "every_type",
        "ranged",
        "direct_t",
        "kv",
        "oneshot",
        "repeating",
        "fired",
        "secret",
        "private_note",
    }
    assert md.table("private_note").table_access is TableAccess.PRIVATE  # type: ignore[union-attr]
    ranged = md.table("ranged")
    assert ranged is not None
    assert {i.name: (i.algorithm, i.columns, i.unique) for i in ranged.indexes} == {
        "ranged_a_b_idx_btree": (IndexAlgorithm.BTREE, (1, 2), False),
        "ranged_by_b": (IndexAlgorithm.BTREE, (2,), False),
        "ranged_id_idx_btree": (IndexAlgorithm.BTREE, (0,), True),
    }
    direct = md.table("direct_t")
    assert (
        direct is not None
        and direct.indexes[0].algorithm is IndexAlgorithm.DIRECT
        and direct.indexes[0].unique
    )
    hashed = md.table("hashed")
    assert hashed is not None
    assert {i.name: i.unique for i in hashed.indexes if i.algorithm is IndexAlgorithm.HASH} == {
        "hashed_code_idx_hash": True,
        "hashed_name_idx_hash": False,
    }
    oneshot = md.table("oneshot")
    assert oneshot is not None and oneshot.schedule is not None
    assert (oneshot.schedule.name, oneshot.schedule.function_name, oneshot.schedule.at_column) == (
        "oneshot_sched",
        "run_oneshot",
        1,
    )
    assert oneshot.columns[1].type == SCHEDULE_AT
    counter = md.table("counter")
    assert counter is not None
    step = counter.sequence_for(1)
    assert step is not None and (step.name, step.start, step.min_value, step.max_value, step.increment) == (
        "counter_step_custom_seq",
        10,
        10,
        20,
        5,
    )
    every = md.table("every_type")
    assert every is not None and len(every.columns) == 30
    assert not any(isinstance(c.type, Ref) for c in every.columns)  # row types are fully resolved
    assert md.row_level_security == ("SELECT * FROM secret WHERE secret.owner = :sender",)
    lifecycles = {r.lifecycle: r.name for r in md.reducers if r.lifecycle is not None}
    assert lifecycles == {
        Lifecycle.INIT: "init",
        Lifecycle.ON_CONNECT: "client_connected",
        Lifecycle.ON_DISCONNECT: "client_disconnected",
    }
    assert md.reducer("check_errnos") is not None
    # Every reducer documented in the README.
    readme = (MODULES_DIR / "module-test" / "README.md").read_text()
    missing = [r.name for r in md.reducers if f"`{r.name}" not in readme]
    assert not missing, f"reducers missing from modules/module-test/README.md: {missing}"
    json.dumps(to_schema_json(md))


def test_module_test_imports_all_29_host_functions() -> None:
    from tests.modules_harness import HOST_IMPORTS

    module = wasmtime.Module(
        wasmtime.Engine(), (MODULES_DIR / "module-test" / "module-test.wasm").read_bytes()
    )
    imports = {(i.module, i.name) for i in module.imports}
    assert imports == {(m, n) for m, n, _, _ in HOST_IMPORTS}


# ---------------------------------------------------------------------------------- official modules

@pytest.mark.parametrize("name", ["quickstart-chat", "upgrade_old_module_v1"])
def test_official_module_decodes_roundtrips_and_validates(name: str) -> None:
    sink = describe(official_module(name)).sink
    raw = decode_raw_module_def(sink)
    assert encode_raw_module_def(raw) == sink
    md = validate(raw)
    json.dumps(to_schema_json(md))
    if name == "upgrade_old_module_v1":
        assert md.tables == () and [r.name for r in md.reducers] == ["noop"]


def test_our_quickstart_chat_describes_exactly_like_the_official_one() -> None:
    official = describe(official_module("quickstart-chat")).sink
    ours = describe(MODULES_DIR / "quickstart-chat" / "quickstart-chat.wasm").sink
    assert ours == official
    md = load_module_def(official)
    assert [(r.name, r.lifecycle) for r in md.reducers] == [
        ("identity_connected", Lifecycle.ON_CONNECT),
        ("identity_disconnected", Lifecycle.ON_DISCONNECT),
        ("init", Lifecycle.INIT),
        ("send_message", None),
        ("set_name", None),
    ]


# ---------------------------------------------------------------------------------- validation failures


def _person(**table_changes: object) -> RawModuleDefV9:
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    table = dataclasses.replace(raw.tables[0], **table_changes)  # type: ignore[arg-type]
    return dataclasses.replace(raw, tables=(table,))


def _errors(raw: RawModuleDefV9) -> str:
    with pytest.raises(ModuleDefError) as info:
        validate(raw)
    return str(info.value)


def test_duplicate_names_name_the_culprit() -> None:
    raw = _person(indexes=(RawIndexDefV9("person", None, IndexAlgorithm.BTREE, (0,)),))
    msg = _errors(raw)
    assert "duplicate name `person`" in msg and "index `person` of table `person`" in msg
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    raw = dataclasses.replace(raw, tables=raw.tables * 2)
    assert "duplicate name `person`" in _errors(raw)
    raw = dataclasses.replace(raw, tables=raw.tables[:1], reducers=raw.reducers * 2)
    assert "duplicate function name `add`" in _errors(raw)


def test_primary_key_without_unique_constraint() -> None:
    msg = _errors(_person(constraints=()))
    assert "table `person`: primary key column `id` has no unique constraint" in msg


def test_unique_constraint_without_index() -> None:
    msg = _errors(_person(indexes=()))
    assert "unique constraint `person_id_key` of table `person` has no index" in msg


def test_sequence_on_a_string_column() -> None:
    msg = _errors(_person(sequences=(RawSequenceDefV9(None, 1, None, None, None, 1),)))
    assert "sequence `person_name_seq` of table `person`: column `name`" in msg and "not an integer" in msg


def test_two_sequences_on_one_column_and_bad_range() -> None:
    seqs = (RawSequenceDefV9(None, 0, None, None, None, 1), RawSequenceDefV9("other", 0, 5, 10, 20, 1))
    msg = _errors(_person(sequences=seqs))
    assert "column `id` has more than one sequence" in msg
    assert "sequence `other` of table `person`: invalid range" in msg


def test_index_column_out_of_range_and_duplicated() -> None:
    msg = _errors(
        _person(
            indexes=(*_person().tables[0].indexes, RawIndexDefV9(None, None, IndexAlgorithm.HASH, (0, 0, 7)))
        )
    )
    assert "index `person_id_id_col_7_idx_hash` of table `person`: column 7 does not exist" in msg
    assert "duplicate columns" in msg


def test_direct_index_on_a_string_column() -> None:
    idx = RawIndexDefV9(None, None, IndexAlgorithm.DIRECT, (1,))
    msg = _errors(_person(indexes=(*_person().tables[0].indexes, idx)))
    assert "index `person_name_idx_direct` of table `person`: a direct index needs a u8/u16/u32/u64" in msg


def _schedule_module(pk_type: object, with_reducer_param: bool = True) -> RawModuleDefV9:
    row = product(("scheduled_id", pk_type), ("scheduled_at", SCHEDULE_AT))  # type: ignore[arg-type]
    table = RawTableDefV9(
        name="tick",
        product_type_ref=0,
        primary_key=(0,),
        indexes=(RawIndexDefV9(None, None, IndexAlgorithm.BTREE, (0,)),),
        constraints=(RawConstraintDefV9(None, (0,)),),
        sequences=(RawSequenceDefV9(None, 0, None, None, None, 1),),
        schedule=RawScheduleDefV9(None, "on_tick", 1),
        table_type=TableType.USER,
        table_access=TableAccess.PRIVATE,
    )
    params = product(("arg", Ref(0))) if with_reducer_param else product()
    return RawModuleDefV9(
        typespace=Typespace([row]),
        tables=(table,),
        reducers=(RawReducerDefV9("on_tick", params, None),),
        types=(RawTypeDefV9(RawScopedTypeNameV9((), "Tick"), 0, True),),
        misc_exports=(),
        row_level_security=(),
    )


def test_schedule_table_is_valid() -> None:
    md = validate(_schedule_module(U64))
    tick = md.table("tick")
    assert tick is not None and tick.schedule is not None
    assert (tick.schedule.name, tick.schedule.id_column, tick.schedule.at_column) == ("tick_sched", 0, 1)
    assert to_schema_json(md)["tables"][0]["schedule"] == {
        "some": {"name": {"some": "tick_sched"}, "reducer_name": "on_tick", "scheduled_at_column": 1}
    }


def test_schedule_table_without_u64_primary_key() -> None:
    msg = _errors(_schedule_module(U32))
    assert "schedule `tick_sched` of table `tick`: a schedule table needs a u64 primary key" in msg


def test_schedule_reducer_with_wrong_params() -> None:
    msg = _errors(_schedule_module(U64, with_reducer_param=False))
    assert "reducer `on_tick` scheduled by table `tick` must take exactly one parameter" in msg


def test_missing_scheduled_reducer() -> None:
    raw = dataclasses.replace(_schedule_module(U64), reducers=())
    assert "no reducer or procedure named `on_tick`" in _errors(raw)


def test_two_init_reducers() -> None:
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    reducers = (
        RawReducerDefV9("first", product(), Lifecycle.INIT),
        RawReducerDefV9("second", product(), Lifecycle.INIT),
    )
    msg = _errors(dataclasses.replace(raw, reducers=reducers))
    assert "reducer `second`: lifecycle Init is already taken by reducer `first`" in msg


def test_bad_type_refs() -> None:
    msg = _errors(_person(product_type_ref=5))
    assert "table `person`: product_type_ref 5 does not refer to a product type" in msg
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    bad_param = RawReducerDefV9("add", product(("name", Ref(9))), None)
    bad_type = RawTypeDefV9(RawScopedTypeNameV9((), "Ghost"), 3, True)
    msg = _errors(dataclasses.replace(raw, reducers=(bad_param,), types=(*raw.types, bad_type)))
    assert "reducer `add` parameter `name`: type ref 9 is out of range" in msg
    assert "type `Ghost`: type ref 3 is out of range" in msg


def test_recursive_column_type() -> None:
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    ts = Typespace([product(("id", U64), ("name", Ref(1))), Ref(1)])
    msg = _errors(dataclasses.replace(raw, typespace=ts))
    assert "table `person` column `name`" in msg and "recursive" in msg


def test_unnamed_column_and_reserved_table_name() -> None:
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    ts = Typespace([product((None, U64), ("name", STRING))])
    msg = _errors(
        dataclasses.replace(raw, typespace=ts, tables=(dataclasses.replace(raw.tables[0], name="st_person"),))
    )
    assert "table `st_person`: column 0 has no name" in msg
    assert "table `st_person`: names starting with `st_` are reserved" in msg


def test_several_problems_are_collected() -> None:
    raw = _person(constraints=(), sequences=(RawSequenceDefV9(None, 1, None, None, None, 1),))
    with pytest.raises(ModuleDefError) as info:
        validate(raw)
    assert len(info.value.problems) >= 2
    assert str(info.value).startswith(f"{len(info.value.problems)} problems in the module definition")


def test_rls_is_kept_and_deduplicated() -> None:
    raw = decode_raw_module_def(SPEC_EXAMPLE)
    sql = "SELECT * FROM person WHERE person.id = 1"
    rls = (RawRowLevelSecurityDefV9(sql), RawRowLevelSecurityDefV9(sql))
    md = validate(dataclasses.replace(raw, row_level_security=rls))
    assert md.row_level_security == (sql,)
    assert to_schema_json(md)["row_level_security"] == [{"sql": sql}]


# ---------------------------------------------------------------------------------- the build


@pytest.mark.skipif(
    shutil.which("clang") is None or shutil.which("wasm-ld") is None, reason="clang/wasm-ld missing"
)
def test_make_modules_rebuilds_every_committed_wasm(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "modules", f"MODULES_OUT={tmp_path}"], cwd=REPO, check=True, capture_output=True
    )
    engine = wasmtime.Engine()
    for committed in sorted(MODULES_DIR.glob("*/*.wasm")):
        rebuilt = tmp_path / committed.name
        assert rebuilt.exists(), f"make modules did not build {committed.name}"
        old = wasmtime.Module(engine, committed.read_bytes())
        new = wasmtime.Module(engine, rebuilt.read_bytes())
        assert sorted(e.name for e in new.exports) == sorted(e.name for e in old.exports), committed.name
        assert sorted((i.module, i.name) for i in new.imports) == sorted(
            (i.module, i.name) for i in old.imports
        )
        assert describe(rebuilt).sink == describe(committed).sink, (
            f"{committed.name}: describe output changed"
        )
