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
    ERROR_KIND_INVALID_NAME: _ClassVar[ErrorKind]
    ERROR_KIND_NAME_NOT_FOUND: _ClassVar[ErrorKind]
    ERROR_KIND_DATABASE_NOT_FOUND: _ClassVar[ErrorKind]
    ERROR_KIND_NOT_AUTHORIZED: _ClassVar[ErrorKind]
    ERROR_KIND_NAME_PERMISSION_DENIED: _ClassVar[ErrorKind]
    ERROR_KIND_BAD_REQUEST: _ClassVar[ErrorKind]
    ERROR_KIND_PUBLISH_FAILED: _ClassVar[ErrorKind]
    ERROR_KIND_UPDATE_REJECTED: _ClassVar[ErrorKind]
    ERROR_KIND_OTHER: _ClassVar[ErrorKind]
    ERROR_KIND_INTERNAL: _ClassVar[ErrorKind]
    ERROR_KIND_CONFLICT: _ClassVar[ErrorKind]
    ERROR_KIND_UNAVAILABLE: _ClassVar[ErrorKind]
    ERROR_KIND_NOT_ACTIVE: _ClassVar[ErrorKind]

class PublishOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUBLISH_OP_CREATED: _ClassVar[PublishOp]
    PUBLISH_OP_UPDATED: _ClassVar[PublishOp]
ERROR_KIND_NONE: ErrorKind
ERROR_KIND_INVALID_NAME: ErrorKind
ERROR_KIND_NAME_NOT_FOUND: ErrorKind
ERROR_KIND_DATABASE_NOT_FOUND: ErrorKind
ERROR_KIND_NOT_AUTHORIZED: ErrorKind
ERROR_KIND_NAME_PERMISSION_DENIED: ErrorKind
ERROR_KIND_BAD_REQUEST: ErrorKind
ERROR_KIND_PUBLISH_FAILED: ErrorKind
ERROR_KIND_UPDATE_REJECTED: ErrorKind
ERROR_KIND_OTHER: ErrorKind
ERROR_KIND_INTERNAL: ErrorKind
ERROR_KIND_CONFLICT: ErrorKind
ERROR_KIND_UNAVAILABLE: ErrorKind
ERROR_KIND_NOT_ACTIVE: ErrorKind
PUBLISH_OP_CREATED: PublishOp
PUBLISH_OP_UPDATED: PublishOp

class Failure(_message.Message):
    __slots__ = ("kind", "message", "json_body", "active_address")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    JSON_BODY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    message: str
    json_body: str
    active_address: str
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., message: _Optional[str] = ..., json_body: _Optional[str] = ..., active_address: _Optional[str] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("name_or_identity",)
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    name_or_identity: str
    def __init__(self, name_or_identity: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("failure", "database_identity")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    database_identity: bytes
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., database_identity: _Optional[bytes] = ...) -> None: ...

class GetDatabaseRequest(_message.Message):
    __slots__ = ("name_or_identity",)
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    name_or_identity: str
    def __init__(self, name_or_identity: _Optional[str] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("node_id", "address", "epoch")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    epoch: int
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class DatabaseInfo(_message.Message):
    __slots__ = ("database_identity", "owner_identity", "host_type", "initial_program_hash", "replicas", "epoch", "leader", "state")
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    HOST_TYPE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PROGRAM_HASH_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    owner_identity: bytes
    host_type: str
    initial_program_hash: str
    replicas: _containers.RepeatedCompositeFieldContainer[Placement]
    epoch: int
    leader: str
    state: str
    def __init__(self, database_identity: _Optional[bytes] = ..., owner_identity: _Optional[bytes] = ..., host_type: _Optional[str] = ..., initial_program_hash: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[Placement, _Mapping]]] = ..., epoch: _Optional[int] = ..., leader: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class DatabaseResponse(_message.Message):
    __slots__ = ("failure", "database")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    database: DatabaseInfo
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., database: _Optional[_Union[DatabaseInfo, _Mapping]] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity", "program", "clear", "num_replicas", "break_clients", "migration_token")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    NUM_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    BREAK_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    program: bytes
    clear: bool
    num_replicas: int
    break_clients: bool
    migration_token: bytes
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ..., program: _Optional[bytes] = ..., clear: _Optional[bool] = ..., num_replicas: _Optional[int] = ..., break_clients: _Optional[bool] = ..., migration_token: _Optional[bytes] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity", "program")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    program: bytes
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ..., program: _Optional[bytes] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("failure", "op", "database_identity", "domain")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    op: PublishOp
    database_identity: bytes
    domain: str
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., op: _Optional[_Union[PublishOp, str]] = ..., database_identity: _Optional[bytes] = ..., domain: _Optional[str] = ...) -> None: ...

class DeleteDatabaseRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ...) -> None: ...

class DeleteDatabaseResponse(_message.Message):
    __slots__ = ("failure",)
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class GetNamesRequest(_message.Message):
    __slots__ = ("database_identity",)
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    database_identity: bytes
    def __init__(self, database_identity: _Optional[bytes] = ...) -> None: ...

class Names(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class AddNameRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity", "name")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    name: str
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class NameResult(_message.Message):
    __slots__ = ("failure", "domain", "database_identity")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    domain: str
    database_identity: bytes
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., domain: _Optional[str] = ..., database_identity: _Optional[bytes] = ...) -> None: ...

class SetNamesRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity", "names")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class SetNamesResponse(_message.Message):
    __slots__ = ("failure",)
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class ListDatabasesRequest(_message.Message):
    __slots__ = ("owner_identity",)
    OWNER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    owner_identity: bytes
    def __init__(self, owner_identity: _Optional[bytes] = ...) -> None: ...

class DatabaseList(_message.Message):
    __slots__ = ("identities",)
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, identities: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeList(_message.Message):
    __slots__ = ("node_ids",)
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class WatchDatabasesRequest(_message.Message):
    __slots__ = ("start_revision",)
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    def __init__(self, start_revision: _Optional[int] = ...) -> None: ...

class DatabaseEvent(_message.Message):
    __slots__ = ("revision", "deleted", "database", "snapshot", "snapshot_end")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    revision: int
    deleted: bool
    database: DatabaseInfo
    snapshot: bool
    snapshot_end: bool
    def __init__(self, revision: _Optional[int] = ..., deleted: _Optional[bool] = ..., database: _Optional[_Union[DatabaseInfo, _Mapping]] = ..., snapshot: _Optional[bool] = ..., snapshot_end: _Optional[bool] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ("name_or_identity",)
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    name_or_identity: str
    def __init__(self, name_or_identity: _Optional[str] = ...) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("failure", "json")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    json: str
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., json: _Optional[str] = ...) -> None: ...

class ReplicaChangeRequest(_message.Message):
    __slots__ = ("name_or_identity", "from_node", "to_node", "timeout_ms")
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    name_or_identity: str
    from_node: str
    to_node: str
    timeout_ms: int
    def __init__(self, name_or_identity: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("name_or_identity", "to_node", "timeout_ms")
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    name_or_identity: str
    to_node: str
    timeout_ms: int
    def __init__(self, name_or_identity: _Optional[str] = ..., to_node: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node_id", "timeout_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    timeout_ms: int
    def __init__(self, node_id: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class OperationResponse(_message.Message):
    __slots__ = ("failure", "steps")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    steps: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., steps: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("name_or_identity", "timeout_ms")
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    name_or_identity: str
    timeout_ms: int
    def __init__(self, name_or_identity: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ReplicaDigest(_message.Message):
    __slots__ = ("node_id", "digest", "rows", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digest: str
    rows: int
    error: str
    def __init__(self, node_id: _Optional[str] = ..., digest: _Optional[str] = ..., rows: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("failure", "offset", "agree", "replicas")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    AGREE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    offset: int
    agree: bool
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaDigest]
    def __init__(self, failure: _Optional[_Union[Failure, _Mapping]] = ..., offset: _Optional[int] = ..., agree: _Optional[bool] = ..., replicas: _Optional[_Iterable[_Union[ReplicaDigest, _Mapping]]] = ...) -> None: ...
