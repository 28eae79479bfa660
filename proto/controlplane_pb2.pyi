from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUBLISH_OP_CREATED: _ClassVar[PublishOp]
    PUBLISH_OP_UPDATED: _ClassVar[PublishOp]

class PublishError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUBLISH_ERROR_NONE: _ClassVar[PublishError]
    PUBLISH_ERROR_NAME_PERMISSION_DENIED: _ClassVar[PublishError]
    PUBLISH_ERROR_NOT_OWNER: _ClassVar[PublishError]
    PUBLISH_ERROR_INVALID_MODULE: _ClassVar[PublishError]
    PUBLISH_ERROR_MIGRATION_REJECTED: _ClassVar[PublishError]
    PUBLISH_ERROR_INVALID_NAME: _ClassVar[PublishError]
    PUBLISH_ERROR_CLEAR_NEEDS_TARGET: _ClassVar[PublishError]

class NameError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NAME_ERROR_NONE: _ClassVar[NameError]
    NAME_ERROR_INVALID: _ClassVar[NameError]
    NAME_ERROR_PERMISSION_DENIED: _ClassVar[NameError]
    NAME_ERROR_NOT_YOUR_DATABASE: _ClassVar[NameError]
    NAME_ERROR_DATABASE_NOT_FOUND: _ClassVar[NameError]
    NAME_ERROR_IN_USE: _ClassVar[NameError]
PUBLISH_OP_CREATED: PublishOp
PUBLISH_OP_UPDATED: PublishOp
PUBLISH_ERROR_NONE: PublishError
PUBLISH_ERROR_NAME_PERMISSION_DENIED: PublishError
PUBLISH_ERROR_NOT_OWNER: PublishError
PUBLISH_ERROR_INVALID_MODULE: PublishError
PUBLISH_ERROR_MIGRATION_REJECTED: PublishError
PUBLISH_ERROR_INVALID_NAME: PublishError
PUBLISH_ERROR_CLEAR_NEEDS_TARGET: PublishError
NAME_ERROR_NONE: NameError
NAME_ERROR_INVALID: NameError
NAME_ERROR_PERMISSION_DENIED: NameError
NAME_ERROR_NOT_YOUR_DATABASE: NameError
NAME_ERROR_DATABASE_NOT_FOUND: NameError
NAME_ERROR_IN_USE: NameError

class PublishRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity", "program", "clear", "num_replicas")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    NUM_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    program: bytes
    clear: bool
    num_replicas: int
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ..., program: _Optional[bytes] = ..., clear: _Optional[bool] = ..., num_replicas: _Optional[int] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("error", "message", "op", "database_identity", "domain")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    error: PublishError
    message: str
    op: PublishOp
    database_identity: bytes
    domain: str
    def __init__(self, error: _Optional[_Union[PublishError, str]] = ..., message: _Optional[str] = ..., op: _Optional[_Union[PublishOp, str]] = ..., database_identity: _Optional[bytes] = ..., domain: _Optional[str] = ...) -> None: ...

class ResolveRequest(_message.Message):
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
    __slots__ = ("found", "database_identity", "owner_identity", "host_type", "initial_program_hash", "replicas")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    HOST_TYPE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PROGRAM_HASH_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    database_identity: bytes
    owner_identity: bytes
    host_type: str
    initial_program_hash: bytes
    replicas: _containers.RepeatedCompositeFieldContainer[Placement]
    def __init__(self, found: _Optional[bool] = ..., database_identity: _Optional[bytes] = ..., owner_identity: _Optional[bytes] = ..., host_type: _Optional[str] = ..., initial_program_hash: _Optional[bytes] = ..., replicas: _Optional[_Iterable[_Union[Placement, _Mapping]]] = ...) -> None: ...

class DeleteDatabaseRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ...) -> None: ...

class DeleteDatabaseResponse(_message.Message):
    __slots__ = ("not_owner", "name_not_found")
    NOT_OWNER_FIELD_NUMBER: _ClassVar[int]
    NAME_NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    not_owner: bool
    name_not_found: bool
    def __init__(self, not_owner: _Optional[bool] = ..., name_not_found: _Optional[bool] = ...) -> None: ...

class GetNamesRequest(_message.Message):
    __slots__ = ("name_or_identity",)
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    name_or_identity: str
    def __init__(self, name_or_identity: _Optional[str] = ...) -> None: ...

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

class SetNamesRequest(_message.Message):
    __slots__ = ("caller_identity", "name_or_identity", "names")
    CALLER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_OR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    caller_identity: bytes
    name_or_identity: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, caller_identity: _Optional[bytes] = ..., name_or_identity: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class NameResult(_message.Message):
    __slots__ = ("error", "message", "domain", "database_identity")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DATABASE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    error: NameError
    message: str
    domain: str
    database_identity: bytes
    def __init__(self, error: _Optional[_Union[NameError, str]] = ..., message: _Optional[str] = ..., domain: _Optional[str] = ..., database_identity: _Optional[bytes] = ...) -> None: ...

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

class WatchDatabasesRequest(_message.Message):
    __slots__ = ("start_revision",)
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    def __init__(self, start_revision: _Optional[int] = ...) -> None: ...

class DatabaseEvent(_message.Message):
    __slots__ = ("revision", "deleted", "database")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    deleted: bool
    database: DatabaseInfo
    def __init__(self, revision: _Optional[int] = ..., deleted: _Optional[bool] = ..., database: _Optional[_Union[DatabaseInfo, _Mapping]] = ...) -> None: ...
