"""The host imports' and exports' wasm signatures (module-abi.md §3.1, §4), as wasmtime types.

Kept apart from :mod:`hostnode.wasm_host` so that it stays plain Python when that module is
compiled (``make native``): wasmtime frees a type in its finaliser, and a compiled module's
globals outlive wasmtime's own at interpreter exit, where the finaliser would then fail.
"""

from __future__ import annotations

import wasmtime

I32 = wasmtime.ValType.i32()
I64 = wasmtime.ValType.i64()

# (module, name, params, results) for all 29 imports of module-abi.md §3.1.
_RANGE9 = [I32] * 9
ABI_IMPORTS: list[tuple[str, str, list[wasmtime.ValType], list[wasmtime.ValType]]] = [
    ("spacetime_10.0", "table_id_from_name", [I32] * 3, [I32]),
    ("spacetime_10.0", "index_id_from_name", [I32] * 3, [I32]),
    ("spacetime_10.0", "datastore_table_row_count", [I32] * 2, [I32]),
    ("spacetime_10.0", "datastore_table_scan_bsatn", [I32] * 2, [I32]),
    ("spacetime_10.0", "datastore_index_scan_range_bsatn", _RANGE9, [I32]),
    ("spacetime_10.0", "datastore_btree_scan_bsatn", _RANGE9, [I32]),
    ("spacetime_10.0", "datastore_delete_by_index_scan_range_bsatn", _RANGE9, [I32]),
    ("spacetime_10.0", "datastore_delete_by_btree_scan_bsatn", _RANGE9, [I32]),
    ("spacetime_10.0", "datastore_delete_all_by_eq_bsatn", [I32] * 4, [I32]),
    ("spacetime_10.0", "row_iter_bsatn_advance", [I32] * 3, [I32]),
    ("spacetime_10.0", "row_iter_bsatn_close", [I32], [I32]),
    ("spacetime_10.0", "datastore_insert_bsatn", [I32] * 3, [I32]),
    ("spacetime_10.0", "datastore_update_bsatn", [I32] * 4, [I32]),
    ("spacetime_10.0", "volatile_nonatomic_schedule_immediate", [I32] * 4, []),
    ("spacetime_10.0", "bytes_sink_write", [I32] * 3, [I32]),
    ("spacetime_10.0", "bytes_source_read", [I32] * 3, [I32]),
    ("spacetime_10.0", "console_log", [I32] * 8, []),
    ("spacetime_10.0", "console_timer_start", [I32] * 2, [I32]),
    ("spacetime_10.0", "console_timer_end", [I32], [I32]),
    ("spacetime_10.0", "identity", [I32], []),
    ("spacetime_10.1", "bytes_source_remaining_length", [I32] * 2, [I32]),
    ("spacetime_10.2", "get_jwt", [I32] * 2, [I32]),
    ("spacetime_10.3", "procedure_sleep_until", [I64], [I64]),
    ("spacetime_10.3", "procedure_start_mut_tx", [I32], [I32]),
    ("spacetime_10.3", "procedure_commit_mut_tx", [], [I32]),
    ("spacetime_10.3", "procedure_abort_mut_tx", [], [I32]),
    ("spacetime_10.3", "procedure_http_request", [I32] * 5, [I32]),
    ("spacetime_10.4", "datastore_index_scan_point_bsatn", [I32] * 4, [I32]),
    ("spacetime_10.4", "datastore_delete_by_index_scan_point_bsatn", [I32] * 4, [I32]),
]

CALL_REDUCER_SIG = ([I32] + [I64] * 7 + [I32] * 2, [I32])
