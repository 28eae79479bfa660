"""Internal gRPC contracts between gateway, control plane and host nodes (issue 3)."""

#: The largest message any server or channel of these services accepts or sends. Messages carry
#: whole programs (up to the gateway's module limit, 64 MiB by default) and whole SQL results, far
#: beyond gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 1 << 30

#: Options for every ``grpc.aio.server`` and channel of these services.
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
