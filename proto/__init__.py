"""Internal gRPC contracts between gateway, control plane and host nodes (issue 3)."""

#: The largest message any server or channel of these services accepts or sends. Messages carry
#: whole programs (up to the gateway's module limit, 64 MiB by default) and whole SQL results, far
#: beyond gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 1 << 30

#: Seconds between HTTP/2 keepalive pings on a connection, and how long an unanswered ping may
#: wait before the connection counts as dead. Streams (``Connect``, ``Logs``) have no deadline,
#: so this is what notices a peer that vanished without closing its socket (a partition, a
#: paused process): within about KEEPALIVE_TIME + KEEPALIVE_TIMEOUT seconds.
KEEPALIVE_TIME = 10.0
KEEPALIVE_TIMEOUT = 5.0

#: Keepalive for channels *and* servers. A gRPC server's default ping policy allows one ping
#: per 5 minutes and, after two early pings, answers ``GOAWAY too_many_pings`` — which would
#: kill every stream of the connection — so each server here accepts pings at half the rate
#: the channels send them, on idle connections too; and a channel keeps pinging while no data
#: flows (gRPC stops after two pings without data by default).
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME * 1000)),
    ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT * 1000)),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", int(KEEPALIVE_TIME * 1000) // 2),
    ("grpc.http2.min_ping_interval_without_data_ms", int(KEEPALIVE_TIME * 1000) // 2),
]

#: Options for every ``grpc.aio.server`` and channel of these services.
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    *KEEPALIVE_OPTIONS,
]
