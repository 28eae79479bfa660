/* spacetime.h — the SpacetimeDB 1.12 module ABI for freestanding C modules.
 *
 * Contents (spec: shared/spec/module-abi.md):
 *   1. errno constants (§2) and log levels (§3.10);
 *   2. all 29 host imports with their exact wasm signatures and import modules (§3.1);
 *   3. the reducer calling convention: a module lists its reducers in a `stdb_reducer_def`
 *      table and expands STDB_MODULE(table, describe_fn), which defines the exports
 *      `__call_reducer__` (dispatch by reducer id = position in the table) and
 *      `__describe_module__` (see moduledef.h);
 *   4. helpers for reducer bodies: read a bytes source, fail with a message, log, cached
 *      table/index ids, insert with generated-column write-back, update, and row iteration
 *      (table / point / range scans) that grows its buffer on BUFFER_TOO_SMALL.
 *
 * Everything is `static inline`; include this once per module (a module is one .c file).
 */
#ifndef STDB_SPACETIME_H
#define STDB_SPACETIME_H

#include "bsatn.h"

/* ---------------------------------------------------------------- errno (§2) */

enum {
    STDB_OK = 0,
    STDB_HOST_CALL_FAILURE = 1,
    STDB_NOT_IN_TRANSACTION = 2,
    STDB_BSATN_DECODE_ERROR = 3,
    STDB_NO_SUCH_TABLE = 4,
    STDB_NO_SUCH_INDEX = 5,
    STDB_NO_SUCH_ITER = 6,
    STDB_NO_SUCH_CONSOLE_TIMER = 7,
    STDB_NO_SUCH_BYTES = 8,
    STDB_NO_SPACE = 9,
    STDB_WRONG_INDEX_ALGO = 10,
    STDB_BUFFER_TOO_SMALL = 11,
    STDB_UNIQUE_ALREADY_EXISTS = 12,
    STDB_SCHEDULE_AT_DELAY_TOO_LONG = 13,
    STDB_INDEX_NOT_UNIQUE = 14,
    STDB_NO_SUCH_ROW = 15,
    STDB_AUTO_INC_OVERFLOW = 16,
    STDB_WOULD_BLOCK_TRANSACTION = 17,
    STDB_TRANSACTION_NOT_ANONYMOUS = 18,
    STDB_TRANSACTION_IS_READ_ONLY = 19,
    STDB_TRANSACTION_IS_MUT = 20,
    STDB_HTTP_ERROR = 21,
};

/* `row_iter_bsatn_advance` / `bytes_source_read` return −1 when exhausted. */
#define STDB_EXHAUSTED (-1)

enum {
    STDB_LOG_ERROR = 0,
    STDB_LOG_WARN = 1,
    STDB_LOG_INFO = 2,
    STDB_LOG_DEBUG = 3,
    STDB_LOG_TRACE = 4,
    STDB_LOG_PANIC = 101,
};

/* ---------------------------------------------------------------- host imports (§3.1) */

#define STDB_IMPORT(mod, name) __attribute__((import_module(mod), import_name(#name))) extern
#define STDB_EXPORT(name) __attribute__((export_name(name)))

/* spacetime_10.0 */
STDB_IMPORT("spacetime_10.0", table_id_from_name) uint16_t table_id_from_name(const uint8_t *name, uint32_t name_len, uint32_t *out);
STDB_IMPORT("spacetime_10.0", index_id_from_name) uint16_t index_id_from_name(const uint8_t *name, uint32_t name_len, uint32_t *out);
STDB_IMPORT("spacetime_10.0", datastore_table_row_count) uint16_t datastore_table_row_count(uint32_t table_id, uint64_t *out);
STDB_IMPORT("spacetime_10.0", datastore_table_scan_bsatn) uint16_t datastore_table_scan_bsatn(uint32_t table_id, uint32_t *out_iter);
STDB_IMPORT("spacetime_10.0", datastore_index_scan_range_bsatn) uint16_t datastore_index_scan_range_bsatn(
    uint32_t index_id, const uint8_t *prefix, uint32_t prefix_len, uint32_t prefix_elems, const uint8_t *rstart,
    uint32_t rstart_len, const uint8_t *rend, uint32_t rend_len, uint32_t *out_iter);
STDB_IMPORT("spacetime_10.0", datastore_btree_scan_bsatn) uint16_t datastore_btree_scan_bsatn(
    uint32_t index_id, const uint8_t *prefix, uint32_t prefix_len, uint32_t prefix_elems, const uint8_t *rstart,
    uint32_t rstart_len, const uint8_t *rend, uint32_t rend_len, uint32_t *out_iter);
STDB_IMPORT("spacetime_10.0", datastore_delete_by_index_scan_range_bsatn) uint16_t datastore_delete_by_index_scan_range_bsatn(
    uint32_t index_id, const uint8_t *prefix, uint32_t prefix_len, uint32_t prefix_elems, const uint8_t *rstart,
    uint32_t rstart_len, const uint8_t *rend, uint32_t rend_len, uint32_t *out_count);
STDB_IMPORT("spacetime_10.0", datastore_delete_by_btree_scan_bsatn) uint16_t datastore_delete_by_btree_scan_bsatn(
    uint32_t index_id, const uint8_t *prefix, uint32_t prefix_len, uint32_t prefix_elems, const uint8_t *rstart,
    uint32_t rstart_len, const uint8_t *rend, uint32_t rend_len, uint32_t *out_count);
STDB_IMPORT("spacetime_10.0", datastore_delete_all_by_eq_bsatn) uint16_t datastore_delete_all_by_eq_bsatn(
    uint32_t table_id, const uint8_t *rel, uint32_t rel_len, uint32_t *out_count);
STDB_IMPORT("spacetime_10.0", row_iter_bsatn_advance) int16_t row_iter_bsatn_advance(uint32_t iter, uint8_t *buf, uint32_t *buf_len);
STDB_IMPORT("spacetime_10.0", row_iter_bsatn_close) uint16_t row_iter_bsatn_close(uint32_t iter);
STDB_IMPORT("spacetime_10.0", datastore_insert_bsatn) uint16_t datastore_insert_bsatn(uint32_t table_id, uint8_t *row, uint32_t *row_len);
STDB_IMPORT("spacetime_10.0", datastore_update_bsatn) uint16_t datastore_update_bsatn(uint32_t table_id, uint32_t index_id, uint8_t *row, uint32_t *row_len);
STDB_IMPORT("spacetime_10.0", volatile_nonatomic_schedule_immediate) void volatile_nonatomic_schedule_immediate(
    const uint8_t *name, uint32_t name_len, const uint8_t *args, uint32_t args_len);
STDB_IMPORT("spacetime_10.0", bytes_sink_write) uint16_t bytes_sink_write(uint32_t sink, const uint8_t *buf, uint32_t *buf_len);
STDB_IMPORT("spacetime_10.0", bytes_source_read) int16_t bytes_source_read(uint32_t source, uint8_t *buf, uint32_t *buf_len);
STDB_IMPORT("spacetime_10.0", console_log) void console_log(uint32_t level, const uint8_t *target, uint32_t target_len,
    const uint8_t *filename, uint32_t filename_len, uint32_t line_number, const uint8_t *message, uint32_t message_len);
STDB_IMPORT("spacetime_10.0", console_timer_start) uint32_t console_timer_start(const uint8_t *name, uint32_t name_len);
STDB_IMPORT("spacetime_10.0", console_timer_end) uint16_t console_timer_end(uint32_t timer_id);
STDB_IMPORT("spacetime_10.0", identity) void identity(uint8_t *out32);
/* spacetime_10.1 */
STDB_IMPORT("spacetime_10.1", bytes_source_remaining_length) int16_t bytes_source_remaining_length(uint32_t source, uint32_t *out);
/* spacetime_10.2 */
STDB_IMPORT("spacetime_10.2", get_jwt) uint16_t get_jwt(const uint8_t *connection_id16, uint32_t *out_source);
/* spacetime_10.3 (procedures; from a reducer they only report errnos) */
STDB_IMPORT("spacetime_10.3", procedure_sleep_until) int64_t procedure_sleep_until(int64_t wake_at_micros);
STDB_IMPORT("spacetime_10.3", procedure_start_mut_tx) uint16_t procedure_start_mut_tx(int64_t *out_micros);
STDB_IMPORT("spacetime_10.3", procedure_commit_mut_tx) uint16_t procedure_commit_mut_tx(void);
STDB_IMPORT("spacetime_10.3", procedure_abort_mut_tx) uint16_t procedure_abort_mut_tx(void);
STDB_IMPORT("spacetime_10.3", procedure_http_request) uint16_t procedure_http_request(
    const uint8_t *request, uint32_t request_len, const uint8_t *body, uint32_t body_len, uint32_t out_sources[2]);
/* spacetime_10.4 */
STDB_IMPORT("spacetime_10.4", datastore_index_scan_point_bsatn) uint16_t datastore_index_scan_point_bsatn(
    uint32_t index_id, const uint8_t *point, uint32_t point_len, uint32_t *out_iter);
STDB_IMPORT("spacetime_10.4", datastore_delete_by_index_scan_point_bsatn) uint16_t datastore_delete_by_index_scan_point_bsatn(
    uint32_t index_id, const uint8_t *point, uint32_t point_len, uint32_t *out_count);

/* ---------------------------------------------------------------- logging */

#ifndef STDB_LOG_TARGET
#define STDB_LOG_TARGET "c_module" /* define before including to name your module in logs */
#endif

static inline void stdb_log_at(uint32_t level, const char *file, uint32_t line, const char *msg, uint32_t len) {
    const char *target = STDB_LOG_TARGET;
    console_log(level, (const uint8_t *)target, stdb_strlen(target), (const uint8_t *)file, stdb_strlen(file), line,
                (const uint8_t *)msg, len);
}
/* STDB_LOG(STDB_LOG_INFO, "text") / STDB_LOG_BUF(level, &buf) — with this file and line. */
#define STDB_LOG(level, cstr) stdb_log_at((level), __FILE__, __LINE__, (cstr), stdb_strlen(cstr))
#define STDB_LOG_BUF(level, buf) stdb_log_at((level), __FILE__, __LINE__, (const char *)(buf)->data, (buf)->len)
#define STDB_LOG_ERROR(s) STDB_LOG(STDB_LOG_ERROR, s)
#define STDB_LOG_WARN(s) STDB_LOG(STDB_LOG_WARN, s)
#define STDB_LOG_INFO(s) STDB_LOG(STDB_LOG_INFO, s)
#define STDB_LOG_DEBUG(s) STDB_LOG(STDB_LOG_DEBUG, s)
#define STDB_LOG_TRACE(s) STDB_LOG(STDB_LOG_TRACE, s)

/* Log at Panic level (101) and trap, like a Rust module's panic hook + abort. */
#define STDB_PANIC(cstr) do { STDB_LOG(STDB_LOG_PANIC, cstr); __builtin_trap(); } while (0)

/* ---------------------------------------------------------------- reducer context and dispatch */

typedef struct {
    uint8_t sender[32];       /* caller Identity, little-endian bytes */
    uint8_t connection_id[16]; /* caller ConnectionId, LE; all zero = none */
    int64_t timestamp;        /* µs since the Unix epoch */
    uint32_t args_source;     /* 0 when the args are empty */
    uint32_t err_sink;        /* the standard sink (1) */
    uint32_t reducer_id;
} stdb_ctx;

/* A reducer body: return 0 for success, or `stdb_fail(...)` (1 with a message in the sink). */
typedef int32_t (*stdb_reducer_fn)(stdb_ctx *ctx, bsatn_reader *args);
/* Writes the reducer's params ProductType (count + elements); NULL = no params. */
typedef void (*stdb_params_fn)(bsatn_buf *b);

enum { STDB_NO_LIFECYCLE = -1, STDB_INIT = 0, STDB_ON_CONNECT = 1, STDB_ON_DISCONNECT = 2 };

typedef struct {
    const char *name;
    int lifecycle;            /* STDB_NO_LIFECYCLE or Lifecycle tag */
    stdb_params_fn params;
    stdb_reducer_fn fn;
    bool raw_args;            /* true: the dispatcher leaves ctx->args_source unread (args reader empty) */
} stdb_reducer_def;

/* Write all of `b` to a sink; true on success. */
static inline bool stdb_sink_write(uint32_t sink, const void *p, uint32_t len) {
    uint32_t n = len;
    return bytes_sink_write(sink, (const uint8_t *)p, &n) == 0;
}

/* Read a whole bytes source into `out` (appending), looping until −1. Source 0 = empty.
 * Returns 0 or the errno from bytes_source_read. */
static inline uint16_t stdb_read_source(uint32_t source, bsatn_buf *out) {
    if (source == 0) return 0;
    for (;;) {
        if (out->cap - out->len < 256) { buf_reserve(out, 1024); out->len -= 1024; }
        uint32_t n = out->cap - out->len;
        int16_t rc = bytes_source_read(source, out->data + out->len, &n);
        if (rc > 0) return (uint16_t)rc;
        out->len += n;
        if (rc == STDB_EXHAUSTED) return 0;
    }
}

/* Put `msg` in the error sink and return HOST_CALL_FAILURE (1): `return stdb_fail(ctx, "...");`. */
static inline int32_t stdb_fail(stdb_ctx *ctx, const char *msg) {
    stdb_sink_write(ctx->err_sink, msg, stdb_strlen(msg));
    return STDB_HOST_CALL_FAILURE;
}
static inline int32_t stdb_fail_buf(stdb_ctx *ctx, const bsatn_buf *msg) {
    stdb_sink_write(ctx->err_sink, msg->data, msg->len);
    return STDB_HOST_CALL_FAILURE;
}

#define STDB_ARGS_STATIC 1024
static uint8_t stdb_args_storage[STDB_ARGS_STATIC];

/* The body of `__call_reducer__`: reads the args into a static buffer (arena if larger),
 * runs the reducer, then frees everything it allocated. A reducer whose args did not decode
 * fully (reader error) fails with "failed to decode reducer arguments". */
static inline int32_t stdb_dispatch(const stdb_reducer_def *defs, uint32_t n_defs, uint32_t id, uint64_t s0,
                                    uint64_t s1, uint64_t s2, uint64_t s3, uint64_t c0, uint64_t c1, int64_t ts,
                                    uint32_t args, uint32_t err) {
    if (id >= n_defs) STDB_PANIC("no such reducer id");
    uint32_t mark = stdb_arena_mark();
    stdb_ctx ctx;
    uint64_t sender[4] = {s0, s1, s2, s3};
    uint64_t conn[2] = {c0, c1};
    __builtin_memcpy(ctx.sender, sender, 32);
    __builtin_memcpy(ctx.connection_id, conn, 16);
    ctx.timestamp = ts;
    ctx.args_source = args;
    ctx.err_sink = err;
    ctx.reducer_id = id;
    bsatn_buf argbuf = buf_fixed(stdb_args_storage, STDB_ARGS_STATIC);
    if (!defs[id].raw_args && stdb_read_source(args, &argbuf) != 0) STDB_PANIC("cannot read reducer arguments");
    bsatn_reader r = reader_new(argbuf.data, argbuf.len);
    int32_t rc = defs[id].fn(&ctx, &r);
    if (rc == 0 && r.err) rc = stdb_fail(&ctx, "failed to decode reducer arguments");
    stdb_arena_reset(mark);
    return rc;
}

/* Defines `__call_reducer__` over `reducers` (a stdb_reducer_def array) and
 * `__describe_module__`, which calls `describe(md)` then emits the module def (moduledef.h). */
#define STDB_MODULE(reducers, describe)                                                                       \
    STDB_EXPORT("__call_reducer__")                                                                           \
    int32_t __call_reducer__(uint32_t id, uint64_t s0, uint64_t s1, uint64_t s2, uint64_t s3, uint64_t c0,   \
                             uint64_t c1, int64_t ts, uint32_t args, uint32_t err) {                          \
        return stdb_dispatch(reducers, sizeof(reducers) / sizeof((reducers)[0]), id, s0, s1, s2, s3, c0, c1, \
                             ts, args, err);                                                                  \
    }                                                                                                         \
    STDB_EXPORT("__describe_module__") void __describe_module__(uint32_t sink) {                            \
        uint32_t mark = stdb_arena_mark();                                                                    \
        md_builder md;                                                                                        \
        md_init(&md);                                                                                         \
        describe(&md);                                                                                        \
        md_reducers(&md, reducers, sizeof(reducers) / sizeof((reducers)[0]));                                 \
        md_finish(&md, sink);                                                                                 \
        stdb_arena_reset(mark);                                                                               \
    }

/* ---------------------------------------------------------------- ids */

/* A cached table or index id: `static stdb_id_cache c;` then stdb_table_id("name", &c). */
typedef struct {
    uint32_t id;
    bool ok;
} stdb_id_cache;

static inline uint32_t stdb_table_id(const char *name, stdb_id_cache *c) {
    if (!c->ok) {
        if (table_id_from_name((const uint8_t *)name, stdb_strlen(name), &c->id) != 0) STDB_PANIC("no such table");
        c->ok = true;
    }
    return c->id;
}
static inline uint32_t stdb_index_id(const char *name, stdb_id_cache *c) {
    if (!c->ok) {
        if (index_id_from_name((const uint8_t *)name, stdb_strlen(name), &c->id) != 0) STDB_PANIC("no such index");
        c->ok = true;
    }
    return c->id;
}
/* TABLE_ID("user") / INDEX_ID("user_identity_idx_btree"): a per-call-site static cache. */
#define TABLE_ID(name) ({ static stdb_id_cache _c; stdb_table_id((name), &_c); })
#define INDEX_ID(name) ({ static stdb_id_cache _c; stdb_index_id((name), &_c); })

/* ---------------------------------------------------------------- insert / update */

/* Insert the row in `row` (bsatn of the whole row). On success (0) the host has replaced the
 * buffer's contents with the generated auto-inc values only (one per column whose value was
 * zero, in column order) and `row->len` is their total length: read them with
 * reader_new(row->data, row->len). Returns the errno otherwise (row unchanged). */
static inline uint16_t stdb_insert(uint32_t table_id, bsatn_buf *row) {
    uint32_t len = row->len;
    uint16_t rc = datastore_insert_bsatn(table_id, row->data, &len);
    if (rc == 0) row->len = len;
    return rc;
}
/* Replace the row whose key under unique index `index_id` equals the new row's; same
 * write-back rule as stdb_insert. */
static inline uint16_t stdb_update(uint32_t table_id, uint32_t index_id, bsatn_buf *row) {
    uint32_t len = row->len;
    uint16_t rc = datastore_update_bsatn(table_id, index_id, row->data, &len);
    if (rc == 0) row->len = len;
    return rc;
}

/* ---------------------------------------------------------------- row iteration */

typedef struct {
    uint32_t handle; /* 0 once exhausted */
    uint8_t *buf;
    uint32_t cap;
} stdb_iter;

/* Open iterators; `buf`/`cap` may be a caller's fixed buffer (it is replaced by an arena
 * buffer when a chunk does not fit). Return 0 or the errno. */
static inline void stdb_iter_init(stdb_iter *it, uint32_t handle, void *buf, uint32_t cap) {
    it->handle = handle;
    it->buf = (uint8_t *)buf;
    it->cap = cap;
    if (!it->buf) { it->cap = cap ? cap : 4096; it->buf = (uint8_t *)stdb_alloc(it->cap); }
}
static inline uint16_t stdb_scan_table(uint32_t table_id, stdb_iter *it, void *buf, uint32_t cap) {
    uint32_t h = 0;
    uint16_t rc = datastore_table_scan_bsatn(table_id, &h);
    stdb_iter_init(it, rc ? 0 : h, buf, cap);
    return rc;
}
static inline uint16_t stdb_scan_point(uint32_t index_id, const void *key, uint32_t key_len, stdb_iter *it, void *buf,
                                       uint32_t cap) {
    uint32_t h = 0;
    uint16_t rc = datastore_index_scan_point_bsatn(index_id, (const uint8_t *)key, key_len, &h);
    stdb_iter_init(it, rc ? 0 : h, buf, cap);
    return rc;
}
/* Range scan: `prefix` = concatenated bsatn of the first `prefix_elems` key columns; `start`
 * and `end` are bsatn Bound<T> (tag 0 Included + T, 1 Excluded + T, 2 Unbounded). */
static inline uint16_t stdb_scan_range(uint32_t index_id, const bsatn_buf *prefix, uint32_t prefix_elems,
                                       const bsatn_buf *start, const bsatn_buf *end, stdb_iter *it, void *buf,
                                       uint32_t cap) {
    uint32_t h = 0;
    static const uint8_t one = 0; /* a valid non-null pointer for an empty prefix */
    uint16_t rc = datastore_index_scan_range_bsatn(index_id, prefix && prefix->len ? prefix->data : &one,
                                                   prefix ? prefix->len : 0, prefix_elems, start->data, start->len,
                                                   end->data, end->len, &h);
    stdb_iter_init(it, rc ? 0 : h, buf, cap);
    return rc;
}

/* Fetch the next chunk (one or more whole rows) into `*chunk`. Returns 1 with a chunk, 0 when
 * the iterator is exhausted, or traps on an unexpected errno. Grows the buffer on
 * BUFFER_TOO_SMALL. Typical loop:
 *     stdb_iter it; bsatn_reader ch;
 *     stdb_scan_table(tid, &it, NULL, 0);
 *     while (stdb_iter_next(&it, &ch)) while (!r_at_end(&ch)) { decode one row from &ch; }
 */
static inline int stdb_iter_next(stdb_iter *it, bsatn_reader *chunk) {
    while (it->handle) {
        uint32_t n = it->cap;
        int16_t rc = row_iter_bsatn_advance(it->handle, it->buf, &n);
        if (rc == STDB_BUFFER_TOO_SMALL) {
            it->cap = n;
            it->buf = (uint8_t *)stdb_alloc(n);
            continue;
        }
        if (rc == STDB_EXHAUSTED) it->handle = 0;
        else if (rc != 0) STDB_PANIC("row_iter_bsatn_advance failed");
        if (n == 0) continue; /* empty final call */
        *chunk = reader_new(it->buf, n);
        return 1;
    }
    return 0;
}
/* Abandon an iterator early. */
static inline void stdb_iter_close(stdb_iter *it) {
    if (it->handle) row_iter_bsatn_close(it->handle);
    it->handle = 0;
}

#endif /* STDB_SPACETIME_H */
