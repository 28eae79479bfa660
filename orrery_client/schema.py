"""What the client knows of a module: its tables' row types and keys, its reducers' params.

Read once per connection from ``GET /v1/database/:name/schema?version=9`` (``client-api.md``
§6.9). Pure: :meth:`ModuleSchema.from_json` takes the parsed document, and each
:class:`TableSchema` turns wire rows (BSATN bytes or JSON text) into ``(key, row)`` pairs —
the key being the row's BSATN, which identifies a row whatever protocol carried it.
"""

from __future__ import annotations

import keyword
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orrery_client.values import from_python, to_python
from sats.bsatn import Codec, codec_for
from sats.errors import DecodeError
from sats.json import dumps, from_json, loads, product_type_from_json, to_json_untyped, type_from_json
from sats.types import ProductType, Typespace

__all__ = ["ModuleSchema", "TableSchema", "ReducerSchema", "SchemaError"]


class SchemaError(ValueError):
    """The module schema is malformed, or names no such table or reducer."""


def _row_class(table: str, columns: list[str]) -> Callable[..., tuple[Any, ...]]:
    """A namedtuple class for a table's rows (columns that are not identifiers get ``_<i>``)."""
    ok = [c if c.isidentifier() and not keyword.iskeyword(c) and not c.startswith("_") else f"_{i}"
          for i, c in enumerate(columns)]  # fmt: skip
    name = "".join(p.capitalize() for p in table.split("_")) or "Row"
    cls = namedtuple(name if name.isidentifier() else "Row", ok, rename=True)  # type: ignore[misc]
    return cls  # type: ignore[no-any-return]


@dataclass
class TableSchema:
    """One table: its row type (resolved), column names, primary key column and row class."""

    name: str
    row_type: ProductType
    typespace: Typespace
    primary_key: int | None
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.columns = [e.name or f"col_{i}" for i, e in enumerate(self.row_type.elements)]
        self._codec: Codec = codec_for(self.row_type, self.typespace)
        self.row_class = _row_class(self.name, self.columns)

    def _make(self, raw: Any) -> tuple[Any, ...]:
        return self.row_class(*to_python(self.row_type, raw, self.typespace))

    def decode_bsatn(self, data: bytes) -> tuple[bytes, tuple[Any, ...]]:
        """``(key, row)`` of a BSATN row."""
        data = bytes(data)
        return data, self._make(self._codec.decode_all(data))

    def decode_json(self, text: str) -> tuple[bytes, tuple[Any, ...]]:
        """``(key, row)`` of a JSON-protocol row (an object by column name or an array)."""
        raw = from_json(self.row_type, loads(text), self.typespace)
        return self._codec.encode(raw), self._make(raw)

    def raw(self, row: bytes | str) -> Any:
        """The SATS value of a wire row (BSATN bytes or JSON text), as the codecs give it."""
        if isinstance(row, str):
            return from_json(self.row_type, loads(row), self.typespace)
        return self._codec.decode_all(row)

    def pk_of(self, row: tuple[Any, ...]) -> Any:
        """The row's primary key value (None when the table has no primary key)."""
        return None if self.primary_key is None else row[self.primary_key]

    def encode_row(self, row: Any) -> bytes:
        """The BSATN of a row given in the SDK's Python form."""
        return self._codec.encode(from_python(self.row_type, row, self.typespace))


@dataclass
class ReducerSchema:
    """One reducer: its name, position (``reducer_id``) and parameters."""

    name: str
    reducer_id: int
    params: ProductType
    typespace: Typespace
    lifecycle: str | None = None

    def encode_args_bsatn(self, args: tuple[Any, ...]) -> bytes:
        """The BSATN of the argument product."""
        return codec_for(self.params, self.typespace).encode(self._raw(args))

    def encode_args_json(self, args: tuple[Any, ...]) -> str:
        """The JSON text of the arguments (an array)."""
        return dumps(to_json_untyped(self.params, self._raw(args), self.typespace))

    def _raw(self, args: tuple[Any, ...]) -> Any:
        if len(args) != len(self.params.elements):
            raise TypeError(f"reducer `{self.name}` takes {len(self.params.elements)} argument(s), got {len(args)}")
        return from_python(self.params, args, self.typespace)

    def decode_args(self, args: bytes | str) -> tuple[Any, ...] | None:
        """The arguments of a TransactionUpdate's reducer call, or None if they do not decode."""
        try:
            if isinstance(args, str):
                raw = from_json(self.params, loads(args), self.typespace)
            else:
                raw = codec_for(self.params, self.typespace).decode_all(args)
            return tuple(to_python(self.params, raw, self.typespace))
        except (DecodeError, TypeError, ValueError):
            return None


@dataclass
class ModuleSchema:
    """The tables and reducers of a module, by name."""

    typespace: Typespace
    tables: dict[str, TableSchema]
    reducers: dict[str, ReducerSchema]

    @classmethod
    def from_json(cls, doc: Any) -> ModuleSchema:
        """Read a ``RawModuleDefV9`` JSON document."""
        try:
            ts = Typespace([type_from_json(t) for t in (doc.get("typespace") or {}).get("types") or []])
            tables = {}
            for t in doc.get("tables") or []:
                row = ts.resolve(ts.types[t["product_type_ref"]])
                if not isinstance(row, ProductType):
                    raise SchemaError(f"table `{t['name']}` has a row type that is not a product")
                pk = t.get("primary_key") or []
                tables[t["name"]] = TableSchema(t["name"], row, ts, pk[0] if len(pk) == 1 else None)
            reducers = {}
            for i, r in enumerate(doc.get("reducers") or []):
                life = (r.get("lifecycle") or {}).get("some")
                reducers[r["name"]] = ReducerSchema(
                    r["name"], i, product_type_from_json(r["params"]), ts,
                    next(iter(life)) if isinstance(life, dict) and life else None,
                )  # fmt: skip
        except SchemaError:
            raise
        except (DecodeError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise SchemaError(f"malformed module schema: {e!r}") from None
        return cls(ts, tables, reducers)

    def table(self, name: str) -> TableSchema:
        """The table called ``name``."""
        try:
            return self.tables[name]
        except KeyError:
            raise SchemaError(f"no table `{name}` in the module") from None

    def reducer(self, name: str) -> ReducerSchema:
        """The reducer called ``name``."""
        try:
            return self.reducers[name]
        except KeyError:
            raise SchemaError(f"no reducer `{name}` in the module") from None
