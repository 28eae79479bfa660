from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_KIND_CLIENT: _ClassVar[CallKind]
    CALL_KIND_HTTP: _ClassVar[CallKind]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_COMMITTED: _ClassVar[Status]
    STATUS_FAILED: _ClassVar[Status]
    STATUS_OUT_OF_ENERGY: _ClassVar[Status]

class CallError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_ERROR_NONE: _ClassVar[CallError]
    CALL_ERROR_NO_SUCH_DATABASE: _ClassVar[CallError]
    CALL_ERROR_NO_SUCH_REDUCER: _ClassVar[CallError]
    CALL_ERROR_LIFECYCLE_REDUCER: _ClassVar[CallError]
    CALL_ERROR_INVALID_ARGUMENTS: _ClassVar[CallError]
    CALL_ERROR_CONNECTION_REJECTED: _ClassVar[CallError]
CALL_KIND_CLIENT: CallKind
CALL_KIND_HTTP: CallKind
STATUS_COMMITTED: Status
STATUS_FAILED: Status
STATUS_OUT_OF_ENERGY: Status
CALL_ERROR_NONE: CallError
CALL_ERROR_NO_SUCH_DATABASE: CallError
CALL_ERROR_NO_SUCH_REDUCER: CallError
CALL_ERROR_LIFECYCLE_REDUCER: CallError
CALL_ERROR_INVALID_ARGUMENTS: CallError
CALL_ERROR_CONNECTION_REJECTED: CallError

class InstallRequest(_message.Message):
    __slots__ = ("database_identity", "owner_identity", "program", "clear")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    owner_identity: bytes
    program: bytes
    clear: bool
    def __init__(self, database_identity: _Optional[bytes] = ..., owner_identity: _Optional[bytes] = ..., program: _Optional[bytes] = ..., clear: _Optional[bool] = ...) -> None: ...

class InstallResponse(_message.Message):
    __slots__ = ("created", "init", "migration")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    created: bool
    init: ReducerResult
    migration: str
    def __init__(self, created: _Optional[bool] = ..., init: _Optional[_Union[ReducerResult, _Mapping]] = ..., migration: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("database_identity",)
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    def __init__(self, database_identity: _Optional[bytes] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReducerCall(_message.Message):
    __slots__ = ("request_id", "reducer", "bsatn", "json", "caller_identity", "connection_id", "kind", "timestamp_micros")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REDUCER_FIELD_NUMBER: _ClassVar[int]
    BSATN_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    reducer: str
    bsatn: bytes
    json: str
    caller_identity: bytes
    connection_id: bytes
    kind: CallKind
    timestamp_micros: int
    def __init__(self, request_id: _Optional[int] = ..., reducer: _Optional[str] = ..., bsatn: _Optional[bytes] = ..., json: _Optional[str] = ..., caller_identity: _Optional[bytes] = ..., connection_id: _Optional[bytes] = ..., kind: _Optional[_Union[CallKind, str]] = ..., timestamp_micros: _Optional[int] = ...) -> None: ...

class CallBatch(_message.Message):
    __slots__ = ("database_identity", "calls")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    calls: _containers.RepeatedCompositeFieldContainer[ReducerCall]
    def __init__(self, database_identity: _Optional[bytes] = ..., calls: _Optional[_Iterable[_Union[ReducerCall, _Mapping]]] = ...) -> None: ...

class ReducerResult(_message.Message):
    __slots__ = ("request_id", "error", "status", "message", "energy_used", "duration_micros", "timestamp_micros", "offset")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENERGY_USED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MICROS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    error: CallError
    status: Status
    message: str
    energy_used: int
    duration_micros: int
    timestamp_micros: int
    offset: int
    def __init__(self, request_id: _Optional[int] = ..., error: _Optional[_Union[CallError, str]] = ..., status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., energy_used: _Optional[int] = ..., duration_micros: _Optional[int] = ..., timestamp_micros: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class CallBatchResult(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReducerResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReducerResult, _Mapping]]] = ...) -> None: ...

class SqlRequest(_message.Message):
    __slots__ = ("database_identity", "query", "caller_identity", "confirmed")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    query: str
    caller_identity: bytes
    confirmed: bool
    def __init__(self, database_identity: _Optional[bytes] = ..., query: _Optional[str] = ..., caller_identity: _Optional[bytes] = ..., confirmed: _Optional[bool] = ...) -> None: ...

class SqlResponse(_message.Message):
    __slots__ = ("json", "error", "duration_micros")
    JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MICROS_FIELD_NUMBER: _ClassVar[int]
    json: str
    error: str
    duration_micros: int
    def __init__(self, json: _Optional[str] = ..., error: _Optional[str] = ..., duration_micros: _Optional[int] = ...) -> None: ...

class SchemaRequest(_message.Message):
    __slots__ = ("database_identity", "version")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    version: int
    def __init__(self, database_identity: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class SchemaResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("database_identity", "num_lines", "follow")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NUM_LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    num_lines: int
    follow: bool
    def __init__(self, database_identity: _Optional[bytes] = ..., num_lines: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogLines(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...

class ClientConnected(_message.Message):
    __slots__ = ("connection_ref", "identity", "connection_id", "jwt_payload", "protocol", "compression", "light", "confirmed")
    CONNECTION_REF_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    JWT_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    LIGHT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    connection_ref: int
    identity: bytes
    connection_id: bytes
    jwt_payload: bytes
    protocol: str
    compression: str
    light: bool
    confirmed: bool
    def __init__(self, connection_ref: _Optional[int] = ..., identity: _Optional[bytes] = ..., connection_id: _Optional[bytes] = ..., jwt_payload: _Optional[bytes] = ..., protocol: _Optional[str] = ..., compression: _Optional[str] = ..., light: _Optional[bool] = ..., confirmed: _Optional[bool] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("connection_ref", "frame")
    CONNECTION_REF_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    connection_ref: int
    frame: bytes
    def __init__(self, connection_ref: _Optional[int] = ..., frame: _Optional[bytes] = ...) -> None: ...

class ClientDisconnected(_message.Message):
    __slots__ = ("connection_ref",)
    CONNECTION_REF_FIELD_NUMBER: _ClassVar[int]
    connection_ref: int
    def __init__(self, connection_ref: _Optional[int] = ...) -> None: ...

class GatewayEvent(_message.Message):
    __slots__ = ("connected", "message", "disconnected")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DISCONNECTED_FIELD_NUMBER: _ClassVar[int]
    connected: ClientConnected
    message: ClientMessage
    disconnected: ClientDisconnected
    def __init__(self, connected: _Optional[_Union[ClientConnected, _Mapping]] = ..., message: _Optional[_Union[ClientMessage, _Mapping]] = ..., disconnected: _Optional[_Union[ClientDisconnected, _Mapping]] = ...) -> None: ...

class GatewayFrames(_message.Message):
    __slots__ = ("database_identity", "events")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    events: _containers.RepeatedCompositeFieldContainer[GatewayEvent]
    def __init__(self, database_identity: _Optional[bytes] = ..., events: _Optional[_Iterable[_Union[GatewayEvent, _Mapping]]] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("connection_refs", "frame")
    CONNECTION_REFS_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    connection_refs: _containers.RepeatedScalarFieldContainer[int]
    frame: bytes
    def __init__(self, connection_refs: _Optional[_Iterable[int]] = ..., frame: _Optional[bytes] = ...) -> None: ...

class ConnectionClosed(_message.Message):
    __slots__ = ("connection_ref", "code", "reason")
    CONNECTION_REF_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    connection_ref: int
    code: int
    reason: str
    def __init__(self, connection_ref: _Optional[int] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class HostEvent(_message.Message):
    __slots__ = ("frame", "closed")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    frame: ServerFrame
    closed: ConnectionClosed
    def __init__(self, frame: _Optional[_Union[ServerFrame, _Mapping]] = ..., closed: _Optional[_Union[ConnectionClosed, _Mapping]] = ...) -> None: ...

class HostFrames(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[HostEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[HostEvent, _Mapping]]] = ...) -> None: ...
