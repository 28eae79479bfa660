"""Text the CLI prints that is not a SQL table: log lines, type signatures, ``describe`` summaries.

Pure functions over parsed JSON (no I/O), so they are tested without a server.

* :func:`render_log_record` — one ``/logs`` ndjson record as ``spacetime logs`` 1.12 prints it
  (``client-api.md`` §6.10): ``<ts> <LEVEL>: <function> <file>:<line>: <message>``, where ``ts``
  is chrono's ``Debug`` form (``2024-05-01T12:00:00.123456Z``), the level is right-aligned in five
  columns, and the ``__spacetimedb__`` sentinel hides function/file of system lines.
* :func:`type_name` — a SATS type the way 1.12's ``call`` error messages spell signatures
  (``Option<String>``, ``Identity``, ``Vec<u8>``, ``{ a: u32 }``).
* :func:`describe_summary` — the readable form of a module schema (``describe`` without ``--json``,
  which 1.12 left unimplemented).
"""

from __future__ import annotations

from typing import Any

from orrery.cli_table import (
    TableFormatError,
    product_type_from_json,
    subsecond_digits,
    type_from_json,
    utc_datetime,
)
from sats.types import (
    CONNECTION_ID,
    IDENTITY,
    SCHEDULE_AT,
    TIME_DURATION,
    TIMESTAMP,
    UUID,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    Ref,
    SumType,
    Typespace,
    TypeTag,
    is_option,
)

__all__ = [
    "LogFormatError",
    "render_log_record",
    "format_log_ts",
    "type_name",
    "signature",
    "describe_summary",
]

#: function/filename/target of lines the host injects itself (1.12 ``database_logger::Record``).
SENTINEL = "__spacetimedb__"

_LEVELS = {
    "Error": "ERROR",
    "Warn": "WARN",
    "Info": "INFO",
    "Debug": "DEBUG",
    "Trace": "TRACE",
    "Panic": "PANIC",
}


class LogFormatError(ValueError):
    """A ``/logs`` line that is not a log record."""


def format_log_ts(micros: int) -> str:
    """chrono's ``Debug`` for a UTC time: ``2024-05-01T12:00:00.123456Z`` (fraction only if non-zero)."""
    t = utc_datetime(micros)
    if t is None:
        return str(micros)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + subsecond_digits(t.microsecond) + "Z"


def render_log_record(record: Any) -> str:
    """One log record as text (possibly several lines for a panic backtrace), no final newline."""
    if not isinstance(record, dict) or not isinstance(record.get("message"), str):
        raise LogFormatError(f"malformed log record: {record!r}")
    level = record.get("level")
    if level not in _LEVELS:
        raise LogFormatError(f"malformed log record: unknown level {level!r}")
    out = []
    ts = record.get("ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        out.append(format_log_ts(ts) + " ")
    out.append(f"{_LEVELS[level]:>5}: ")
    function, filename, line = record.get("function"), record.get("filename"), record.get("line_number")
    located = False
    if isinstance(function, str) and function != SENTINEL:
        out.append(function)
        located = True
    if isinstance(filename, str) and filename != SENTINEL:
        out.append((" " if located else "") + filename + (f":{line}" if isinstance(line, int) else ""))
        located = True
    if located:
        out.append(": ")
    out.append(record["message"])
    for frame in record.get("trace") or ():
        if not isinstance(frame, dict):
            continue
        text = "\n    in "
        if isinstance(frame.get("module_name"), str):
            text += f"{frame['module_name']} :: "
        if isinstance(frame.get("func_name"), str):
            text += frame["func_name"]
        out.append(text)
    return "".join(out)


# --------------------------------------------------------------------------- types and signatures

_PRIMITIVE_NAMES = {
    TypeTag.STRING: "String",
    TypeTag.BOOL: "bool",
}


def _braced(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }" if items else "{}"


def type_name(ty: AlgebraicType, ts: Typespace | None = None) -> str:
    """A type as 1.12's CLI spells it in signatures (refs resolved through ``ts``)."""
    if isinstance(ty, Ref):
        if ts is None or not 0 <= ty.idx < len(ts.types):
            return f"&{ty.idx}"
        return type_name(ts.types[ty.idx], ts)
    special = {
        IDENTITY: "Identity",
        CONNECTION_ID: "ConnectionId",
        SCHEDULE_AT: "ScheduleAt",
        TIMESTAMP: "Timestamp",
        TIME_DURATION: "TimeDuration",
        UUID: "Uuid",
    }
    for shape, name in special.items():
        if ty == shape:
            return name
    if isinstance(ty, PrimitiveType):
        return _PRIMITIVE_NAMES.get(ty.kind, ty.kind.name.lower())
    if isinstance(ty, ArrayType):
        return f"Vec<{type_name(ty.elem_ty, ts)}>"
    if isinstance(ty, SumType):
        if is_option(ty):
            return f"Option<{type_name(ty.variants[0].algebraic_type, ts)}>"
        return "enum " + _braced(
            [
                (f"{v.name}: " if v.name is not None else "") + type_name(v.algebraic_type, ts)
                for v in ty.variants
            ]
        )
    if isinstance(ty, ProductType):
        return _braced(
            [
                (f"{e.name}: " if e.name is not None else "") + type_name(e.algebraic_type, ts)
                for e in ty.elements
            ]
        )
    return repr(ty)


def signature(name: str, params: ProductType, ts: Typespace | None = None) -> str:
    """``send_message(text: String)``."""
    args = [
        (f"{e.name}: " if e.name is not None else "") + type_name(e.algebraic_type, ts)
        for e in params.elements
    ]
    return f"{name}({', '.join(args)})"


def _variant_name(obj: Any) -> str | None:
    """The variant of a typed SATS-JSON enum value (``{"Init": []}`` → ``"Init"``)."""
    if isinstance(obj, dict) and len(obj) == 1:
        return next(iter(obj))
    return None


def _some(obj: Any) -> Any:
    """The payload of ``{"some": x}``; None for ``{"none": []}`` or anything else."""
    if isinstance(obj, dict) and "some" in obj:
        return obj["some"]
    return None


def schema_typespace(schema: dict[str, Any]) -> Typespace:
    """The typespace of a ``RawModuleDefV9`` JSON document."""
    types = (schema.get("typespace") or {}).get("types") or []
    return Typespace([type_from_json(t) for t in types])


def callables(schema: dict[str, Any]) -> list[tuple[str, str, ProductType, str | None]]:
    """``(kind, name, params, lifecycle)`` of every reducer and procedure, in schema order."""
    out: list[tuple[str, str, ProductType, str | None]] = []
    for r in schema.get("reducers") or []:
        out.append(
            (
                "reducer",
                r["name"],
                product_type_from_json(r["params"]),
                _variant_name(_some(r.get("lifecycle"))),
            )
        )
    for export in schema.get("misc_exports") or []:
        proc = export.get("Procedure") if isinstance(export, dict) else None
        if isinstance(proc, dict):
            out.append(("procedure", proc["name"], product_type_from_json(proc["params"]), None))
    return out


_LIFECYCLE_NAMES = {"Init": "init", "OnConnect": "client connected", "OnDisconnect": "client disconnected"}


def describe_summary(schema: Any, database: str, identity: str) -> str:
    """A readable overview of a module: tables with their columns and keys, then reducers."""
    if not isinstance(schema, dict):
        raise TableFormatError("malformed schema: expected a JSON object")
    ts = schema_typespace(schema)
    lines = [f"Database {database} (identity {identity})", ""]
    tables = schema.get("tables") or []
    lines.append(f"Tables ({len(tables)}):" if tables else "Tables: none")
    for t in tables:
        access = (_variant_name(t.get("table_access")) or "").lower() or "public"
        kind = _variant_name(t.get("table_type"))
        tags = [access] + (["system"] if kind == "System" else [])
        sched = _some(t.get("schedule"))
        if isinstance(sched, dict) and sched.get("reducer_name"):
            tags.append(f"scheduled: {sched['reducer_name']}")
        lines.append(f"  {t['name']} ({', '.join(tags)})")
        row = ts.types[t["product_type_ref"]] if 0 <= t.get("product_type_ref", -1) < len(ts.types) else None
        if not isinstance(row, ProductType):
            continue
        pk = set(t.get("primary_key") or [])
        unique = {
            c
            for con in t.get("constraints") or []
            for c in ((con.get("data") or {}).get("Unique") or {}).get("columns") or []
            if len(((con.get("data") or {}).get("Unique") or {}).get("columns") or []) == 1
        }
        auto = {s.get("column") for s in t.get("sequences") or []}
        for i, e in enumerate(row.elements):
            notes = (
                (["primary key"] if i in pk else [])
                + (["unique"] if i in unique - pk else [])
                + (["auto_inc"] if i in auto else [])
            )
            note = f"  [{', '.join(notes)}]" if notes else ""
            lines.append(
                f"    {e.name if e.name is not None else i}: {type_name(e.algebraic_type, ts)}{note}"
            )
    calls = callables(schema)
    lines.append("")
    lines.append(f"Reducers and procedures ({len(calls)}):" if calls else "Reducers and procedures: none")
    for kind, name, params, lifecycle in calls:
        note = f"  [{_LIFECYCLE_NAMES.get(lifecycle, lifecycle)}]" if lifecycle else ""
        note += "  [procedure]" if kind == "procedure" else ""
        lines.append(f"  {signature(name, params, ts)}{note}")
    return "\n".join(lines)
