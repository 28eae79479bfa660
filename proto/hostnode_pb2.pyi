from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_NONE: _ClassVar[ErrorKind]
    ERROR_KIND_NO_SUCH_DATABASE: _ClassVar[ErrorKind]
    ERROR_KIND_NO_SUCH_REDUCER: _ClassVar[ErrorKind]
    ERROR_KIND_LIFECYCLE_REDUCER: _ClassVar[ErrorKind]
    ERROR_KIND_INVALID_ARGUMENTS: _ClassVar[ErrorKind]
    ERROR_KIND_DATABASE_CLOSED: _ClassVar[ErrorKind]
    ERROR_KIND_DATABASE: _ClassVar[ErrorKind]
    ERROR_KIND_INVALID_PROGRAM: _ClassVar[ErrorKind]
    ERROR_KIND_MIGRATION_REJECTED: _ClassVar[ErrorKind]
    ERROR_KIND_SQL: _ClassVar[ErrorKind]
    ERROR_KIND_INTERNAL: _ClassVar[ErrorKind]
    ERROR_KIND_MIGRATION_POLICY: _ClassVar[ErrorKind]
    ERROR_KIND_NOT_LEADER: _ClassVar[ErrorKind]
    ERROR_KIND_NO_QUORUM: _ClassVar[ErrorKind]
    ERROR_KIND_OUTCOME_UNKNOWN: _ClassVar[ErrorKind]
    ERROR_KIND_STALE_EPOCH: _ClassVar[ErrorKind]
    ERROR_KIND_OVERLOADED: _ClassVar[ErrorKind]

class CallKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_KIND_CLIENT: _ClassVar[CallKind]
    CALL_KIND_HTTP: _ClassVar[CallKind]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_COMMITTED: _ClassVar[Status]
    STATUS_FAILED: _ClassVar[Status]
    STATUS_OUT_OF_ENERGY: _ClassVar[Status]
ERROR_KIND_NONE: ErrorKind
ERROR_KIND_NO_SUCH_DATABASE: ErrorKind
ERROR_KIND_NO_SUCH_REDUCER: ErrorKind
ERROR_KIND_LIFECYCLE_REDUCER: ErrorKind
ERROR_KIND_INVALID_ARGUMENTS: ErrorKind
ERROR_KIND_DATABASE_CLOSED: ErrorKind
ERROR_KIND_DATABASE: ErrorKind
ERROR_KIND_INVALID_PROGRAM: ErrorKind
ERROR_KIND_MIGRATION_REJECTED: ErrorKind
ERROR_KIND_SQL: ErrorKind
ERROR_KIND_INTERNAL: ErrorKind
ERROR_KIND_MIGRATION_POLICY: ErrorKind
ERROR_KIND_NOT_LEADER: ErrorKind
ERROR_KIND_NO_QUORUM: ErrorKind
ERROR_KIND_OUTCOME_UNKNOWN: ErrorKind
ERROR_KIND_STALE_EPOCH: ErrorKind
ERROR_KIND_OVERLOADED: ErrorKind
CALL_KIND_CLIENT: CallKind
CALL_KIND_HTTP: CallKind
STATUS_COMMITTED: Status
STATUS_FAILED: Status
STATUS_OUT_OF_ENERGY: Status

class Failure(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    message: str
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., message: _Optional[str] = ...) -> None: ...

class InstallRequest(_message.Message):
    __slots__ = ("database_identity", "owner_identity", "program", "clear", "keep_program", "migration_token", "epoch", "replicas", "learners", "generation")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    KEEP_PROGRAM_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    owner_identity: bytes
    program: bytes
    clear: bool
    keep_program: bool
    migration_token: bytes
    epoch: int
    replicas: _containers.RepeatedCompositeFieldContainer[Peer]
    learners: _containers.RepeatedCompositeFieldContainer[Peer]
    generation: int
    def __init__(self, database_identity: _Optional[bytes] = ..., owner_identity: _Optional[bytes] = ..., program: _Optional[bytes] = ..., clear: _Optional[bool] = ..., keep_program: _Optional[bool] = ..., migration_token: _Optional[bytes] = ..., epoch: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., learners: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class InstallResponse(_message.Message):
    __slots__ = ("created", "init", "migration", "failure")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    created: bool
    init: ReducerResult
    migration: str
    failure: Failure
    def __init__(self, created: _Optional[bool] = ..., init: _Optional[_Union[ReducerResult, _Mapping]] = ..., migration: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("database_identity",)
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    def __init__(self, database_identity: _Optional[bytes] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("failure",)
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("request_id", "failure", "status", "message", "energy_used", "duration_micros", "timestamp_micros", "offset", "connect")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENERGY_USED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MICROS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    failure: Failure
    status: Status
    message: str
    energy_used: int
    duration_micros: int
    timestamp_micros: int
    offset: int
    connect: bool
    def __init__(self, request_id: _Optional[int] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., energy_used: _Optional[int] = ..., duration_micros: _Optional[int] = ..., timestamp_micros: _Optional[int] = ..., offset: _Optional[int] = ..., connect: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("body", "failure", "duration_micros")
    BODY_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MICROS_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    failure: Failure
    duration_micros: int
    def __init__(self, body: _Optional[bytes] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., duration_micros: _Optional[int] = ...) -> None: ...

class SchemaRequest(_message.Message):
    __slots__ = ("database_identity", "version")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    version: int
    def __init__(self, database_identity: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class SchemaResponse(_message.Message):
    __slots__ = ("json", "failure")
    JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    json: str
    failure: Failure
    def __init__(self, json: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class PlanUpdateRequest(_message.Message):
    __slots__ = ("database_identity", "program")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    program: bytes
    def __init__(self, database_identity: _Optional[bytes] = ..., program: _Optional[bytes] = ...) -> None: ...

class PlanUpdateResponse(_message.Message):
    __slots__ = ("failure", "automatic", "plan", "break_clients", "token", "reason")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    BREAK_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    automatic: bool
    plan: str
    break_clients: bool
    token: str
    reason: str
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., automatic: _Optional[bool] = ..., plan: _Optional[str] = ..., break_clients: _Optional[bool] = ..., token: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("lines", "failure")
    LINES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    failure: Failure
    def __init__(self, lines: _Optional[_Iterable[str]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class ClientConnected(_message.Message):
    __slots__ = ("connection_ref", "identity", "connection_id", "jwt_payload", "protocol", "compression", "light", "confirmed", "token")
    CONNECTION_REF_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    JWT_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    LIGHT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    connection_ref: int
    identity: bytes
    connection_id: bytes
    jwt_payload: bytes
    protocol: str
    compression: str
    light: bool
    confirmed: bool
    token: str
    def __init__(self, connection_ref: _Optional[int] = ..., identity: _Optional[bytes] = ..., connection_id: _Optional[bytes] = ..., jwt_payload: _Optional[bytes] = ..., protocol: _Optional[str] = ..., compression: _Optional[str] = ..., light: _Optional[bool] = ..., confirmed: _Optional[bool] = ..., token: _Optional[str] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("connection_ref", "frame", "text")
    CONNECTION_REF_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    connection_ref: int
    frame: bytes
    text: bool
    def __init__(self, connection_ref: _Optional[int] = ..., frame: _Optional[bytes] = ..., text: _Optional[bool] = ...) -> None: ...

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

class PromiseRequest(_message.Message):
    __slots__ = ("database_identity", "epoch")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    epoch: int
    def __init__(self, database_identity: _Optional[bytes] = ..., epoch: _Optional[int] = ...) -> None: ...

class PromiseResponse(_message.Message):
    __slots__ = ("failure", "promised_epoch", "last_epoch", "next_offset", "generation")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    PROMISED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    promised_epoch: int
    last_epoch: int
    next_offset: int
    generation: int
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., promised_epoch: _Optional[int] = ..., last_epoch: _Optional[int] = ..., next_offset: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("epoch", "offset", "payload")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    offset: int
    payload: bytes
    def __init__(self, epoch: _Optional[int] = ..., offset: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ReplicateHello(_message.Message):
    __slots__ = ("database_identity", "epoch", "generation", "leader_node", "learner")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LEADER_NODE_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    epoch: int
    generation: int
    leader_node: str
    learner: bool
    def __init__(self, database_identity: _Optional[bytes] = ..., epoch: _Optional[int] = ..., generation: _Optional[int] = ..., leader_node: _Optional[str] = ..., learner: _Optional[bool] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("epoch", "records", "commit_offset", "retain_offset")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RETAIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    commit_offset: int
    retain_offset: int
    def __init__(self, epoch: _Optional[int] = ..., records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ..., commit_offset: _Optional[int] = ..., retain_offset: _Optional[int] = ...) -> None: ...

class LeaderMessage(_message.Message):
    __slots__ = ("hello", "records", "truncate_to", "snapshot_needed")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_TO_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_NEEDED_FIELD_NUMBER: _ClassVar[int]
    hello: ReplicateHello
    records: RecordBatch
    truncate_to: int
    snapshot_needed: bool
    def __init__(self, hello: _Optional[_Union[ReplicateHello, _Mapping]] = ..., records: _Optional[_Union[RecordBatch, _Mapping]] = ..., truncate_to: _Optional[int] = ..., snapshot_needed: _Optional[bool] = ...) -> None: ...

class FollowerState(_message.Message):
    __slots__ = ("promised_epoch", "last_epoch", "next_offset", "durable_offset", "applied_offset", "first_offset", "generation", "has_replica")
    PROMISED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DURABLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HAS_REPLICA_FIELD_NUMBER: _ClassVar[int]
    promised_epoch: int
    last_epoch: int
    next_offset: int
    durable_offset: int
    applied_offset: int
    first_offset: int
    generation: int
    has_replica: bool
    def __init__(self, promised_epoch: _Optional[int] = ..., last_epoch: _Optional[int] = ..., next_offset: _Optional[int] = ..., durable_offset: _Optional[int] = ..., applied_offset: _Optional[int] = ..., first_offset: _Optional[int] = ..., generation: _Optional[int] = ..., has_replica: _Optional[bool] = ...) -> None: ...

class FollowerAck(_message.Message):
    __slots__ = ("durable_offset", "applied_offset")
    DURABLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    durable_offset: int
    applied_offset: int
    def __init__(self, durable_offset: _Optional[int] = ..., applied_offset: _Optional[int] = ...) -> None: ...

class FollowerMessage(_message.Message):
    __slots__ = ("state", "ack", "refused")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    state: FollowerState
    ack: FollowerAck
    refused: Failure
    def __init__(self, state: _Optional[_Union[FollowerState, _Mapping]] = ..., ack: _Optional[_Union[FollowerAck, _Mapping]] = ..., refused: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("database_identity", "epoch")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    epoch: int
    def __init__(self, database_identity: _Optional[bytes] = ..., epoch: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("applied_offset", "generation", "total_bytes", "data", "failure")
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    applied_offset: int
    generation: int
    total_bytes: int
    data: bytes
    failure: Failure
    def __init__(self, applied_offset: _Optional[int] = ..., generation: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class ReplicaStatusRequest(_message.Message):
    __slots__ = ("database_identity",)
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    def __init__(self, database_identity: _Optional[bytes] = ...) -> None: ...

class FollowerProgress(_message.Message):
    __slots__ = ("node_id", "connected", "learner", "durable_offset", "applied_offset")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    DURABLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    connected: bool
    learner: bool
    durable_offset: int
    applied_offset: int
    def __init__(self, node_id: _Optional[str] = ..., connected: _Optional[bool] = ..., learner: _Optional[bool] = ..., durable_offset: _Optional[int] = ..., applied_offset: _Optional[int] = ...) -> None: ...

class ReplicaState(_message.Message):
    __slots__ = ("database_identity", "role", "epoch", "promised_epoch", "last_epoch", "first_offset", "next_offset", "durable_offset", "commit_offset", "applied_offset", "generation", "followers", "has_quorum")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PROMISED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DURABLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMMIT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    FOLLOWERS_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    role: str
    epoch: int
    promised_epoch: int
    last_epoch: int
    first_offset: int
    next_offset: int
    durable_offset: int
    commit_offset: int
    applied_offset: int
    generation: int
    followers: _containers.RepeatedCompositeFieldContainer[FollowerProgress]
    has_quorum: bool
    def __init__(self, database_identity: _Optional[bytes] = ..., role: _Optional[str] = ..., epoch: _Optional[int] = ..., promised_epoch: _Optional[int] = ..., last_epoch: _Optional[int] = ..., first_offset: _Optional[int] = ..., next_offset: _Optional[int] = ..., durable_offset: _Optional[int] = ..., commit_offset: _Optional[int] = ..., applied_offset: _Optional[int] = ..., generation: _Optional[int] = ..., followers: _Optional[_Iterable[_Union[FollowerProgress, _Mapping]]] = ..., has_quorum: _Optional[bool] = ...) -> None: ...

class ReplicaStatusResponse(_message.Message):
    __slots__ = ("node_id", "incarnation", "replicas")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    incarnation: str
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaState]
    def __init__(self, node_id: _Optional[str] = ..., incarnation: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[ReplicaState, _Mapping]]] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("database_identity", "offset", "timeout_ms")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    offset: int
    timeout_ms: int
    def __init__(self, database_identity: _Optional[bytes] = ..., offset: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class DigestResponse(_message.Message):
    __slots__ = ("failure", "digest", "offset", "rows", "retry_at")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    digest: bytes
    offset: int
    rows: int
    retry_at: int
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., digest: _Optional[bytes] = ..., offset: _Optional[int] = ..., rows: _Optional[int] = ..., retry_at: _Optional[int] = ...) -> None: ...

class PrepareTransferRequest(_message.Message):
    __slots__ = ("database_identity", "epoch", "target_node", "timeout_ms")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    epoch: int
    target_node: str
    timeout_ms: int
    def __init__(self, database_identity: _Optional[bytes] = ..., epoch: _Optional[int] = ..., target_node: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class PrepareTransferResponse(_message.Message):
    __slots__ = ("failure", "next_offset")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    next_offset: int
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., next_offset: _Optional[int] = ...) -> None: ...

class AssignRequest(_message.Message):
    __slots__ = ("record_json", "deleted", "database_identity", "peers")
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    record_json: str
    deleted: bool
    database_identity: bytes
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, record_json: _Optional[str] = ..., deleted: _Optional[bool] = ..., database_identity: _Optional[bytes] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class AssignResponse(_message.Message):
    __slots__ = ("failure",)
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...
