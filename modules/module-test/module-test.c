/* module-test — exercises every host import, SATS type, index kind and module-def feature.
 *
 * Most reducers are self-checking: they call host imports, compare the results with
 * module-abi.md and fail with "<reducer>: <what>: expected X, got Y" on the first mismatch,
 * so a host test only has to assert that the call succeeds. Others just write rows for the
 * host's tests to inspect. README.md documents every table and reducer.
 */
#define STDB_LOG_TARGET "module_test"
#include "moduledef.h"

/* ================================================================ preinit order */

static int preinit_state;
STDB_EXPORT("__preinit__10_first") void preinit_first(void) { preinit_state = preinit_state == 0 ? 1 : 90; }
STDB_EXPORT("__preinit__20_second") void preinit_second(void) { preinit_state = preinit_state == 1 ? 2 : 91; }

/* ================================================================ helpers */

/* Fail with "<func>: <what>: expected <want>, got <got>". */
static int32_t fail_expect(stdb_ctx *ctx, const char *func, const char *what, int64_t want, int64_t got) {
    bsatn_buf m = buf_new(128);
    buf_text(&m, func);
    buf_text(&m, ": ");
    buf_text(&m, what);
    buf_text(&m, ": expected ");
    buf_text_i64(&m, want);
    buf_text(&m, ", got ");
    buf_text_i64(&m, got);
    return stdb_fail_buf(ctx, &m);
}
#define EXPECT(what, got, want)                                                          \
    do {                                                                                 \
        int64_t _g = (int64_t)(got), _w = (int64_t)(want);                               \
        if (_g != _w) return fail_expect(ctx, __func__, (what), _w, _g);                 \
    } while (0)
/* Propagate a failing sub-check. */
#define CHECK(call) do { int32_t _rc = (call); if (_rc) return _rc; } while (0)

static int32_t fail_errno(stdb_ctx *ctx, const char *what, uint16_t rc) {
    bsatn_buf m = buf_new(96);
    buf_text(&m, what);
    buf_text(&m, " failed: errno ");
    buf_text_u64(&m, rc);
    return stdb_fail_buf(ctx, &m);
}

static const uint8_t UNBOUNDED = 2;
static const uint8_t NONNULL = 0; /* a valid pointer for empty inputs */
#define BOGUS_ID 0x7ffffff0u

/* Bound<u32>: 0 Included, 1 Excluded, 2 Unbounded. */
static bsatn_buf bound_u32(uint8_t tag, uint32_t v) {
    bsatn_buf b = buf_new(8);
    w_tag(&b, tag);
    if (tag != 2) w_u32(&b, v);
    return b;
}

/* Count the rows of an open iterator whose rows are `row_size` bytes each. */
static uint32_t count_fixed(stdb_iter *it, uint32_t row_size) {
    bsatn_reader ch;
    uint32_t bytes = 0;
    while (stdb_iter_next(it, &ch)) bytes += ch.len;
    return bytes / row_size;
}

/* Skip one row of `fired` (id u64, source String, ref_id u64, payload String, at i64, sender [32]). */
static void skip_fired(bsatn_reader *r) {
    r_u64(r); r_str(r); r_u64(r); r_str(r); r_i64(r); r_take(r, 32);
}

static void kv_row(bsatn_buf *b, const char *k, uint32_t klen, const char *v, uint32_t vlen) {
    w_strn(b, k, klen);
    w_strn(b, v, vlen);
}

/* Insert or replace kv[key] = value (C strings). */
static uint16_t kv_set(const char *k, uint32_t klen, const char *v, uint32_t vlen) {
    bsatn_buf row = buf_new(16 + klen + vlen);
    kv_row(&row, k, klen, v, vlen);
    uint16_t rc = stdb_update(TABLE_ID("kv"), INDEX_ID("kv_key_idx_btree"), &row);
    if (rc == STDB_NO_SUCH_ROW) {
        row.len = 0;
        kv_row(&row, k, klen, v, vlen);
        rc = stdb_insert(TABLE_ID("kv"), &row);
    }
    return rc;
}
static uint16_t kv_set_buf(const char *k, const bsatn_buf *v) {
    return kv_set(k, stdb_strlen(k), (const char *)v->data, v->len);
}
/* Point lookup of kv[key]; true if present. */
static bool kv_get(const char *k, uint32_t klen, stdb_str *value) {
    bsatn_buf key = buf_new(8 + klen);
    w_strn(&key, k, klen);
    stdb_iter it;
    bsatn_reader ch;
    if (stdb_scan_point(INDEX_ID("kv_key_idx_btree"), key.data, key.len, &it, 0, 256)) STDB_PANIC("kv scan failed");
    bool found = false;
    while (stdb_iter_next(&it, &ch)) {
        r_str(&ch);
        *value = r_str(&ch);
        found = true;
    }
    return found;
}

/* Insert a `fired` row. */
static uint16_t record_fired(stdb_ctx *ctx, const char *source, uint64_t ref_id, stdb_str payload) {
    bsatn_buf row = buf_new(96 + payload.len);
    w_u64(&row, 0);
    w_str(&row, source);
    w_u64(&row, ref_id);
    w_strn(&row, payload.ptr, payload.len);
    w_i64(&row, ctx->timestamp);
    w_raw(&row, ctx->sender, 32);
    return stdb_insert(TABLE_ID("fired"), &row);
}

static uint16_t record_lifecycle(stdb_ctx *ctx, const char *kind) {
    bsatn_buf row = buf_new(128);
    w_u64(&row, 0);
    w_str(&row, kind);
    w_raw(&row, ctx->sender, 32);
    w_raw(&row, ctx->connection_id, 16);
    w_i64(&row, ctx->timestamp);
    return stdb_insert(TABLE_ID("lifecycle_event"), &row);
}

/* Delete every row of `ranged` then insert id = a*10+b for a in 0..5, b in 0..10 (50 rows). */
static uint16_t seed_ranged_rows(void) {
    uint32_t n = 0;
    uint16_t rc = datastore_delete_by_index_scan_range_bsatn(INDEX_ID("ranged_id_idx_btree"), &NONNULL, 0, 0,
                                                             &UNBOUNDED, 1, &UNBOUNDED, 1, &n);
    if (rc) return rc;
    for (uint32_t a = 0; a < 5; a++)
        for (uint32_t b = 0; b < 10; b++) {
            uint32_t row[3] = {a * 10 + b, a, b};
            uint32_t len = 12;
            rc = datastore_insert_bsatn(TABLE_ID("ranged"), (uint8_t *)row, &len);
            if (rc) return rc;
        }
    return 0;
}

/* ================================================================ lifecycle */

static int32_t init(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint16_t rc = record_lifecycle(ctx, "init");
    return rc ? fail_errno(ctx, "init insert", rc) : 0;
}

static int32_t client_connected(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    stdb_str v;
    if (kv_get("reject_connections", 18, &v)) return stdb_fail(ctx, "connection rejected by module");
    uint16_t rc = record_lifecycle(ctx, "connect");
    return rc ? fail_errno(ctx, "connect insert", rc) : 0;
}

static int32_t client_disconnected(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint16_t rc = record_lifecycle(ctx, "disconnect");
    return rc ? fail_errno(ctx, "disconnect insert", rc) : 0;
}

/* ================================================================ plain row writers */

/* insert_every_type(row: EveryType): the args are exactly bsatn(row); insert them as-is. */
static int32_t insert_every_type(stdb_ctx *ctx, bsatn_reader *args) {
    bsatn_buf row = buf_new(args->len);
    w_raw(&row, args->p, args->len);
    args->pos = args->len;
    uint16_t rc = stdb_insert(TABLE_ID("every_type"), &row);
    return rc ? fail_errno(ctx, "insert every_type", rc) : 0;
}

/* every_type_roundtrip(row: EveryType): insert, read back by id, compare bytes. */
static int32_t every_type_roundtrip(stdb_ctx *ctx, bsatn_reader *args) {
    uint32_t id;
    __builtin_memcpy(&id, args->p, 4);
    CHECK(insert_every_type(ctx, args));
    stdb_iter it;
    bsatn_reader ch;
    uint16_t rc = stdb_scan_point(INDEX_ID("every_type_id_idx_btree"), &id, 4, &it, 0, 0);
    if (rc) return fail_errno(ctx, "every_type point scan", rc);
    uint32_t rows = 0;
    while (stdb_iter_next(&it, &ch)) {
        EXPECT("stored row length", ch.len, args->len);
        if (!stdb_memeq(ch.p, args->p, args->len)) return stdb_fail(ctx, "every_type_roundtrip: stored bytes differ");
        rows++;
    }
    EXPECT("rows with that id", rows, 1);
    return 0;
}

/* set_kv(key: String, value: String): insert or replace. */
static int32_t set_kv(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str k = r_str(args), v = r_str(args);
    if (args->err) return 1;
    uint16_t rc = kv_set(k.ptr, k.len, v.ptr, v.len);
    return rc ? fail_errno(ctx, "set_kv", rc) : 0;
}

/* delete_kv(key: String): fails "no such key" if absent. */
static int32_t delete_kv(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str k = r_str(args);
    if (args->err) return 1;
    bsatn_buf key = buf_new(8 + k.len);
    w_strn(&key, k.ptr, k.len);
    uint32_t n = 0;
    uint16_t rc = datastore_delete_by_index_scan_point_bsatn(INDEX_ID("kv_key_idx_btree"), key.data, key.len, &n);
    if (rc) return fail_errno(ctx, "delete_kv", rc);
    return n ? 0 : stdb_fail(ctx, "no such key");
}

/* big_row(key: String, size: u32): kv[key] = "x" * size (grows memory, makes a large row). */
static int32_t big_row(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str k = r_str(args);
    uint32_t size = r_u32(args);
    if (args->err) return 1;
    char *v = (char *)stdb_alloc(size + 1);
    __builtin_memset(v, 'x', size);
    uint16_t rc = kv_set(k.ptr, k.len, v, size);
    return rc ? fail_errno(ctx, "big_row", rc) : 0;
}

/* insert_secret(data: String): secret row owned by the caller (RLS-filtered table). */
static int32_t insert_secret(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str d = r_str(args);
    if (args->err) return 1;
    bsatn_buf row = buf_new(64 + d.len);
    w_u64(&row, 0);
    w_raw(&row, ctx->sender, 32);
    w_strn(&row, d.ptr, d.len);
    uint16_t rc = stdb_insert(TABLE_ID("secret"), &row);
    return rc ? fail_errno(ctx, "insert_secret", rc) : 0;
}

/* insert_private(text: String): row in the private table. */
static int32_t insert_private(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str t = r_str(args);
    if (args->err) return 1;
    bsatn_buf row = buf_new(16 + t.len);
    w_u64(&row, 0);
    w_strn(&row, t.ptr, t.len);
    uint16_t rc = stdb_insert(TABLE_ID("private_note"), &row);
    return rc ? fail_errno(ctx, "insert_private", rc) : 0;
}

/* insert_autoinc_u8(note: String): id = 0 → sequence; fails "insert_autoinc_u8 failed: errno N". */
static int32_t insert_autoinc_u8(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str note = r_str(args);
    if (args->err) return 1;
    bsatn_buf row = buf_new(16 + note.len);
    w_u8(&row, 0);
    w_strn(&row, note.ptr, note.len);
    uint16_t rc = stdb_insert(TABLE_ID("autoinc_u8"), &row);
    if (rc) return fail_errno(ctx, "insert_autoinc_u8", rc);
    if (row.len != 1) return fail_expect(ctx, __func__, "write-back length", 1, row.len);
    bsatn_buf msg = buf_new(32);
    buf_text(&msg, "autoinc_u8 generated ");
    buf_text_u64(&msg, row.data[0]);
    STDB_LOG_BUF(STDB_LOG_INFO, &msg);
    return 0;
}

/* seed_ranged(): ranged := 50 rows (id = a*10+b, a in 0..5, b in 0..10). */
static int32_t seed_ranged(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint16_t rc = seed_ranged_rows();
    return rc ? fail_errno(ctx, "seed_ranged", rc) : 0;
}

/* scan_ranged_b(start_tag: u8, start: u32, end_tag: u8, end: u32, expected: u32):
 * range scan on ranged_by_b (single column b); fails unless `expected` rows come back. */
static int32_t scan_ranged_b(stdb_ctx *ctx, bsatn_reader *args) {
    uint8_t st = r_u8(args);
    uint32_t s = r_u32(args);
    uint8_t et = r_u8(args);
    uint32_t e = r_u32(args);
    uint32_t expected = r_u32(args);
    if (args->err) return 1;
    bsatn_buf sb = bound_u32(st, s), eb = bound_u32(et, e);
    stdb_iter it;
    uint16_t rc = stdb_scan_range(INDEX_ID("ranged_by_b"), 0, 0, &sb, &eb, &it, 0, 0);
    if (rc) return fail_errno(ctx, "scan_ranged_b", rc);
    EXPECT("rows", count_fixed(&it, 12), expected);
    return 0;
}

/* scan_ranged_ab(prefix_elems: u8, a: u32, start_tag: u8, start: u32, end_tag: u8, end: u32,
 * expected: u32): range scan on ranged_a_b_idx_btree. prefix_elems 0: bounds apply to a;
 * prefix_elems 1: prefix a, bounds apply to b. */
static int32_t scan_ranged_ab(stdb_ctx *ctx, bsatn_reader *args) {
    uint8_t pe = r_u8(args);
    uint32_t a = r_u32(args);
    uint8_t st = r_u8(args);
    uint32_t s = r_u32(args);
    uint8_t et = r_u8(args);
    uint32_t e = r_u32(args);
    uint32_t expected = r_u32(args);
    if (args->err) return 1;
    bsatn_buf prefix = buf_new(8);
    if (pe) w_u32(&prefix, a);
    bsatn_buf sb = bound_u32(st, s), eb = bound_u32(et, e);
    stdb_iter it;
    uint16_t rc = stdb_scan_range(INDEX_ID("ranged_a_b_idx_btree"), &prefix, pe, &sb, &eb, &it, 0, 0);
    if (rc) return fail_errno(ctx, "scan_ranged_ab", rc);
    EXPECT("rows", count_fixed(&it, 12), expected);
    return 0;
}

/* ================================================================ schedules */

static int32_t insert_oneshot(stdb_ctx *ctx, int64_t at, stdb_str payload, uint16_t *rc_out, uint64_t *id) {
    bsatn_buf row = buf_new(32 + payload.len);
    w_u64(&row, 0);
    w_tag(&row, 1); /* ScheduleAt::Time */
    w_i64(&row, at);
    w_strn(&row, payload.ptr, payload.len);
    *rc_out = stdb_insert(TABLE_ID("oneshot"), &row);
    if (*rc_out == 0 && row.len == 8) __builtin_memcpy(id, row.data, 8);
    (void)ctx;
    return 0;
}

/* schedule_oneshot(delay_micros: i64, payload: String): oneshot row at Time(now + delay). */
static int32_t schedule_oneshot(stdb_ctx *ctx, bsatn_reader *args) {
    int64_t delay = r_i64(args);
    stdb_str payload = r_str(args);
    if (args->err) return 1;
    uint16_t rc;
    uint64_t id = 0;
    insert_oneshot(ctx, ctx->timestamp + delay, payload, &rc, &id);
    if (rc) return fail_errno(ctx, "schedule_oneshot", rc);
    bsatn_buf msg = buf_new(48);
    buf_text(&msg, "scheduled oneshot ");
    buf_text_u64(&msg, id);
    STDB_LOG_BUF(STDB_LOG_INFO, &msg);
    return 0;
}

/* schedule_repeating(interval_micros: i64, max_fires: u32): repeating row at Interval. */
static int32_t schedule_repeating(stdb_ctx *ctx, bsatn_reader *args) {
    int64_t interval = r_i64(args);
    uint32_t max_fires = r_u32(args);
    if (args->err) return 1;
    bsatn_buf row = buf_new(32);
    w_u64(&row, 0);
    w_tag(&row, 0); /* ScheduleAt::Interval */
    w_i64(&row, interval);
    w_u32(&row, max_fires);
    uint16_t rc = stdb_insert(TABLE_ID("repeating"), &row);
    return rc ? fail_errno(ctx, "schedule_repeating", rc) : 0;
}

/* cancel_schedule(repeating: bool, id: u64): delete the schedule row; fails if absent. */
static int32_t cancel_schedule(stdb_ctx *ctx, bsatn_reader *args) {
    bool repeating = r_bool(args);
    uint64_t id = r_u64(args);
    if (args->err) return 1;
    uint32_t n = 0;
    uint16_t rc = datastore_delete_by_index_scan_point_bsatn(
        repeating ? INDEX_ID("repeating_scheduled_id_idx_btree") : INDEX_ID("oneshot_scheduled_id_idx_btree"),
        (const uint8_t *)&id, 8, &n);
    if (rc) return fail_errno(ctx, "cancel_schedule", rc);
    return n ? 0 : stdb_fail(ctx, "no such scheduled row");
}

/* run_oneshot(row: OneShot) — the oneshot table's scheduled reducer: records a `fired` row. */
static int32_t run_oneshot(stdb_ctx *ctx, bsatn_reader *args) {
    uint64_t id = r_u64(args);
    r_tag(args, 2);
    r_i64(args);
    stdb_str payload = r_str(args);
    if (args->err) return 1;
    uint16_t rc = record_fired(ctx, "oneshot", id, payload);
    return rc ? fail_errno(ctx, "run_oneshot", rc) : 0;
}

/* run_repeating(row: Repeating): records a `fired` row; deletes its schedule row once it has
 * fired max_fires times (0 = forever). */
static int32_t run_repeating(stdb_ctx *ctx, bsatn_reader *args) {
    uint64_t id = r_u64(args);
    r_tag(args, 2);
    r_i64(args);
    uint32_t max_fires = r_u32(args);
    if (args->err) return 1;
    stdb_str empty = {"", 0};
    uint16_t rc = record_fired(ctx, "repeating", id, empty);
    if (rc) return fail_errno(ctx, "run_repeating", rc);
    if (!max_fires) return 0;
    bsatn_buf key = buf_new(32);
    w_str(&key, "repeating");
    w_u64(&key, id);
    stdb_iter it;
    bsatn_reader ch;
    rc = stdb_scan_point(INDEX_ID("fired_source_ref_id_idx_btree"), key.data, key.len, &it, 0, 0);
    if (rc) return fail_errno(ctx, "fired scan", rc);
    uint32_t count = 0;
    while (stdb_iter_next(&it, &ch))
        while (!r_at_end(&ch) && !ch.err) { skip_fired(&ch); count++; }
    if (count >= max_fires) {
        uint32_t n = 0;
        rc = datastore_delete_by_index_scan_point_bsatn(INDEX_ID("repeating_scheduled_id_idx_btree"),
                                                        (const uint8_t *)&id, 8, &n);
        if (rc) return fail_errno(ctx, "repeating delete", rc);
    }
    return 0;
}

/* schedule_immediate(payload: String): volatile_nonatomic_schedule_immediate("record_immediate"). */
static int32_t schedule_immediate(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str payload = r_str(args);
    if (args->err) return 1;
    bsatn_buf a = buf_new(8 + payload.len);
    w_strn(&a, payload.ptr, payload.len);
    volatile_nonatomic_schedule_immediate((const uint8_t *)"record_immediate", 16, a.data, a.len);
    (void)ctx;
    return 0;
}

/* record_immediate(payload: String): records a `fired` row with source "immediate". */
static int32_t record_immediate(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str payload = r_str(args);
    if (args->err) return 1;
    uint16_t rc = record_fired(ctx, "immediate", 0, payload);
    return rc ? fail_errno(ctx, "record_immediate", rc) : 0;
}

/* check_schedule_too_long(): a oneshot 2^36 ms + 1 h ahead → 13; then removes any such row. */
static int32_t check_schedule_too_long(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    stdb_str payload = {"too_long", 8};
    uint16_t rc;
    uint64_t id;
    /* 2^36 ms plus an hour: the host measures from max(call timestamp, wall clock). */
    insert_oneshot(ctx, ctx->timestamp + ((int64_t)(1ll << 36) + 3600000) * 1000, payload, &rc, &id);
    EXPECT("insert far-future oneshot", rc, STDB_SCHEDULE_AT_DELAY_TOO_LONG);
    /* The reference leaves the row in the transaction; remove it so nothing fires later. */
    stdb_iter it;
    bsatn_reader ch;
    rc = stdb_scan_table(TABLE_ID("oneshot"), &it, 0, 0);
    if (rc) return fail_errno(ctx, "oneshot scan", rc);
    while (stdb_iter_next(&it, &ch)) {
        while (!r_at_end(&ch) && !ch.err) {
            uint32_t start = ch.pos;
            r_u64(&ch); r_tag(&ch, 2); r_i64(&ch);
            stdb_str p = r_str(&ch);
            if (str_eq(p, "too_long")) {
                bsatn_buf rel = buf_new(8 + ch.pos - start);
                w_vec_len(&rel, 1);
                w_raw(&rel, ch.p + start, ch.pos - start);
                uint32_t n;
                rc = datastore_delete_all_by_eq_bsatn(TABLE_ID("oneshot"), rel.data, rel.len, &n);
                if (rc) return fail_errno(ctx, "oneshot delete", rc);
            }
        }
    }
    return 0;
}

/* ================================================================ failures */

/* fail_with(message: String): returns 1 with exactly `message` in the error sink. */
static int32_t fail_with(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str m = r_str(args);
    if (args->err) return 1;
    stdb_sink_write(ctx->err_sink, m.ptr, m.len);
    return 1;
}

/* return_code(code: i32): returns `code` with nothing in the sink (2+ = "unknown return code"). */
static int32_t return_code(stdb_ctx *ctx, bsatn_reader *args) {
    (void)ctx;
    return r_i32(args);
}

/* insert_then_fail(key: String): sets kv[key] = "uncommitted" then fails → nothing persists. */
static int32_t insert_then_fail(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str k = r_str(args);
    if (args->err) return 1;
    kv_set(k.ptr, k.len, "uncommitted", 11);
    return stdb_fail(ctx, "insert_then_fail: rolled back");
}

/* panic_trap(): Panic-level (101) log "module-test: deliberate panic", then trap. */
static int32_t panic_trap(stdb_ctx *ctx, bsatn_reader *args) {
    (void)ctx; (void)args;
    STDB_PANIC("module-test: deliberate panic");
}

/* insert_then_trap(key: String): kv[key] = "uncommitted" then trap (no log) → rolled back. */
static int32_t insert_then_trap(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str k = r_str(args);
    if (args->err) return 1;
    kv_set(k.ptr, k.len, "uncommitted", 11);
    (void)ctx;
    __builtin_trap();
}

/* infinite_loop(): never returns (runs out of fuel / hits the host's time limit). */
static int32_t infinite_loop(stdb_ctx *ctx, bsatn_reader *args) {
    (void)ctx; (void)args;
    volatile uint32_t spin = 0;
    for (;;) spin++;
}

/* ================================================================ logging, identity, jwt */

/* log_levels(): one record per level (see README), a record without target/file/line, one with
 * invalid UTF-8, an unknown level, and a console timer; console_timer_end twice → 0 then 7. */
static int32_t log_levels(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    STDB_LOG_ERROR("log level error");
    STDB_LOG_WARN("log level warn");
    STDB_LOG_INFO("log level info");
    STDB_LOG_DEBUG("log level debug");
    STDB_LOG_TRACE("log level trace");
    STDB_LOG(42, "log level 42");
    const char *bare = "log without location";
    console_log(STDB_LOG_INFO, 0, 0, 0, 0, 0xFFFFFFFFu, (const uint8_t *)bare, stdb_strlen(bare));
    static const uint8_t bad_utf8[] = {'b', 'a', 'd', ' ', 0xff, ' ', 'u', 't', 'f', '8'};
    console_log(STDB_LOG_INFO, 0, 0, 0, 0, 0xFFFFFFFFu, bad_utf8, sizeof bad_utf8);
    uint32_t t = console_timer_start((const uint8_t *)"module-test timer", 17);
    EXPECT("console_timer_start returns non-zero", t != 0, 1);
    volatile uint32_t spin = 0;
    for (int i = 0; i < 1000; i++) spin++;
    EXPECT("console_timer_end", console_timer_end(t), 0);
    EXPECT("console_timer_end again", console_timer_end(t), STDB_NO_SUCH_CONSOLE_TIMER);
    return 0;
}

/* whoami(): kv["whoami.sender"] = sender hex, kv["whoami.connection_id"] = connection id hex,
 * kv["whoami.timestamp"] = µs decimal, kv["whoami.db_identity"] = identity() hex. */
static int32_t whoami(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    bsatn_buf v = buf_new(80);
    buf_text_hex_be(&v, ctx->sender, 32);
    uint16_t rc = kv_set_buf("whoami.sender", &v);
    v.len = 0;
    buf_text_hex_be(&v, ctx->connection_id, 16);
    if (!rc) rc = kv_set_buf("whoami.connection_id", &v);
    v.len = 0;
    buf_text_i64(&v, ctx->timestamp);
    if (!rc) rc = kv_set_buf("whoami.timestamp", &v);
    uint8_t me[32];
    identity(me);
    v.len = 0;
    buf_text_hex_be(&v, me, 32);
    if (!rc) rc = kv_set_buf("whoami.db_identity", &v);
    return rc ? fail_errno(ctx, "whoami", rc) : 0;
}

/* record_jwt(): get_jwt(caller's connection id) → jwt_record row (present=false when source 0). */
static int32_t record_jwt(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint32_t src = 0xdeadbeef;
    uint16_t rc = get_jwt(ctx->connection_id, &src);
    if (rc) return fail_errno(ctx, "get_jwt", rc);
    bsatn_buf payload = buf_new(512);
    if (src && stdb_read_source(src, &payload)) return stdb_fail(ctx, "reading the jwt source failed");
    bsatn_buf row = buf_new(64 + payload.len);
    w_u64(&row, 0);
    w_raw(&row, ctx->connection_id, 16);
    w_bool(&row, src != 0);
    w_strn(&row, (const char *)payload.data, payload.len);
    rc = stdb_insert(TABLE_ID("jwt_record"), &row);
    return rc ? fail_errno(ctx, "jwt_record insert", rc) : 0;
}

/* check_preinit(): __preinit__10_first then __preinit__20_second ran, in that order. */
static int32_t check_preinit(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    EXPECT("preinit state", preinit_state, 2);
    return 0;
}

/* ================================================================ self-checks */

/* check_errnos(): every error path of module-abi.md §2/§3 that a module can trigger. */
static int32_t check_errnos(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint32_t out = 0;
    uint64_t out64 = 0;
    const uint8_t *nm = (const uint8_t *)"no_such_thing";
    EXPECT("table_id_from_name(unknown)", table_id_from_name(nm, 13, &out), STDB_NO_SUCH_TABLE);
    EXPECT("index_id_from_name(unknown)", index_id_from_name(nm, 13, &out), STDB_NO_SUCH_INDEX);
    EXPECT("datastore_table_row_count(bad table)", datastore_table_row_count(BOGUS_ID, &out64), STDB_NO_SUCH_TABLE);
    EXPECT("datastore_table_scan_bsatn(bad table)", datastore_table_scan_bsatn(BOGUS_ID, &out), STDB_NO_SUCH_TABLE);
    EXPECT("datastore_index_scan_range_bsatn(bad index)",
           datastore_index_scan_range_bsatn(BOGUS_ID, &NONNULL, 0, 0, &UNBOUNDED, 1, &UNBOUNDED, 1, &out),
           STDB_NO_SUCH_INDEX);
    EXPECT("datastore_btree_scan_bsatn(bad index)",
           datastore_btree_scan_bsatn(BOGUS_ID, &NONNULL, 0, 0, &UNBOUNDED, 1, &UNBOUNDED, 1, &out),
           STDB_NO_SUCH_INDEX);
    EXPECT("datastore_delete_by_index_scan_range_bsatn(bad index)",
           datastore_delete_by_index_scan_range_bsatn(BOGUS_ID, &NONNULL, 0, 0, &UNBOUNDED, 1, &UNBOUNDED, 1, &out),
           STDB_NO_SUCH_INDEX);
    EXPECT("datastore_delete_by_btree_scan_bsatn(bad index)",
           datastore_delete_by_btree_scan_bsatn(BOGUS_ID, &NONNULL, 0, 0, &UNBOUNDED, 1, &UNBOUNDED, 1, &out),
           STDB_NO_SUCH_INDEX);
    static const uint8_t empty_rel[4] = {0, 0, 0, 0};
    EXPECT("datastore_delete_all_by_eq_bsatn(bad table)",
           datastore_delete_all_by_eq_bsatn(BOGUS_ID, empty_rel, 4, &out), STDB_NO_SUCH_TABLE);
    static const uint8_t short_rel[5] = {1, 0, 0, 0, 7}; /* one kv row, truncated */
    EXPECT("datastore_delete_all_by_eq_bsatn(undecodable)",
           datastore_delete_all_by_eq_bsatn(TABLE_ID("kv"), short_rel, 5, &out), STDB_BSATN_DECODE_ERROR);
    uint8_t buf[16];
    uint32_t len = sizeof buf;
    EXPECT("row_iter_bsatn_advance(0)", row_iter_bsatn_advance(0, buf, &len), STDB_NO_SUCH_ITER);
    len = sizeof buf;
    EXPECT("row_iter_bsatn_advance(bad)", row_iter_bsatn_advance(BOGUS_ID, buf, &len), STDB_NO_SUCH_ITER);
    EXPECT("row_iter_bsatn_close(bad)", row_iter_bsatn_close(BOGUS_ID), STDB_NO_SUCH_ITER);
    uint8_t row[12] = {0};
    len = 12;
    EXPECT("datastore_insert_bsatn(bad table)", datastore_insert_bsatn(BOGUS_ID, row, &len), STDB_NO_SUCH_TABLE);
    len = 12;
    EXPECT("datastore_update_bsatn(bad table)",
           datastore_update_bsatn(BOGUS_ID, INDEX_ID("ranged_id_idx_btree"), row, &len), STDB_NO_SUCH_TABLE);
    len = 12;
    EXPECT("datastore_update_bsatn(bad index)", datastore_update_bsatn(TABLE_ID("ranged"), BOGUS_ID, row, &len),
           STDB_NO_SUCH_INDEX);
    len = 12;
    EXPECT("datastore_update_bsatn(non-unique index)",
           datastore_update_bsatn(TABLE_ID("ranged"), INDEX_ID("ranged_by_b"), row, &len), STDB_INDEX_NOT_UNIQUE);
    uint32_t missing[3] = {999999, 1, 1};
    len = 12;
    EXPECT("datastore_update_bsatn(no such row)",
           datastore_update_bsatn(TABLE_ID("ranged"), INDEX_ID("ranged_id_idx_btree"), (uint8_t *)missing, &len),
           STDB_NO_SUCH_ROW);
    len = 4;
    EXPECT("bytes_sink_write(sink 2)", bytes_sink_write(2, buf, &len), STDB_NO_SUCH_BYTES);
    len = sizeof buf;
    EXPECT("bytes_source_read(0)", bytes_source_read(0, buf, &len), STDB_NO_SUCH_BYTES);
    len = sizeof buf;
    EXPECT("bytes_source_read(bad)", bytes_source_read(BOGUS_ID, buf, &len), STDB_NO_SUCH_BYTES);
    EXPECT("bytes_source_remaining_length(0)", bytes_source_remaining_length(0, &out), STDB_NO_SUCH_BYTES);
    EXPECT("bytes_source_remaining_length(bad)", bytes_source_remaining_length(BOGUS_ID, &out), STDB_NO_SUCH_BYTES);
    EXPECT("console_timer_end(bad)", console_timer_end(BOGUS_ID), STDB_NO_SUCH_CONSOLE_TIMER);
    /* Index algorithm and key decoding. */
    EXPECT("range scan on a hash index",
           datastore_index_scan_range_bsatn(INDEX_ID("hashed_name_idx_hash"), &NONNULL, 0, 0, &UNBOUNDED, 1,
                                            &UNBOUNDED, 1, &out),
           STDB_WRONG_INDEX_ALGO);
    static const uint8_t bad_bound[1] = {7};
    EXPECT("range scan with an invalid Bound tag",
           datastore_index_scan_range_bsatn(INDEX_ID("ranged_by_b"), &NONNULL, 0, 0, bad_bound, 1, &UNBOUNDED, 1,
                                            &out),
           STDB_BSATN_DECODE_ERROR);
    static const uint8_t short_bound[3] = {0, 1, 0}; /* Included + 2 of 4 bytes */
    EXPECT("range scan with a truncated bound",
           datastore_index_scan_range_bsatn(INDEX_ID("ranged_by_b"), &NONNULL, 0, 0, short_bound, 3, &UNBOUNDED, 1,
                                            &out),
           STDB_BSATN_DECODE_ERROR);
    static const uint8_t two_u32[8] = {1, 0, 0, 0, 2, 0, 0, 0};
    EXPECT("range scan with prefix_elems == key width",
           datastore_index_scan_range_bsatn(INDEX_ID("ranged_a_b_idx_btree"), two_u32, 8, 2, &UNBOUNDED, 1,
                                            &UNBOUNDED, 1, &out),
           STDB_BSATN_DECODE_ERROR);
    EXPECT("point scan with a truncated key",
           datastore_index_scan_point_bsatn(INDEX_ID("ranged_id_idx_btree"), two_u32, 2, &out),
           STDB_BSATN_DECODE_ERROR);
    EXPECT("point scan(bad index)", datastore_index_scan_point_bsatn(BOGUS_ID, two_u32, 4, &out), STDB_NO_SUCH_INDEX);
    EXPECT("delete by point(bad index)", datastore_delete_by_index_scan_point_bsatn(BOGUS_ID, two_u32, 4, &out),
           STDB_NO_SUCH_INDEX);
    /* Procedure imports from inside a reducer (a transaction is open). */
    int64_t micros = 0;
    EXPECT("procedure_start_mut_tx in a reducer", procedure_start_mut_tx(&micros), STDB_WOULD_BLOCK_TRANSACTION);
    EXPECT("procedure_commit_mut_tx in a reducer", procedure_commit_mut_tx(), STDB_TRANSACTION_NOT_ANONYMOUS);
    EXPECT("procedure_abort_mut_tx in a reducer", procedure_abort_mut_tx(), STDB_TRANSACTION_NOT_ANONYMOUS);
    uint32_t sources[2] = {0, 0};
    bsatn_buf req = buf_new(64); /* HttpRequest{Get, no headers, no timeout, "http://localhost/", Http11} */
    w_tag(&req, 0);
    w_vec_len(&req, 0);
    w_none(&req);
    w_str(&req, "http://localhost/");
    w_tag(&req, 2);
    EXPECT("procedure_http_request in a reducer",
           procedure_http_request(req.data, req.len, &NONNULL, 0, sources), STDB_WOULD_BLOCK_TRANSACTION);
    EXPECT("procedure_sleep_until(-1) returns now (> 0)", procedure_sleep_until(-1) > 0, 1);
    /* get_jwt succeeds in a transaction (source may be 0). */
    EXPECT("get_jwt", get_jwt(ctx->connection_id, &out), 0);
    return 0;
}

/* check_range_scans(): seeds `ranged` and `direct_t`, checks inclusive/exclusive/unbounded
 * bounds, multi-column prefixes, ordering, the btree alias, direct and point scans, and
 * range deletes. Exclusive bounds are only used on the LAST constrained column (see README). */
static int32_t check_range_scans(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint16_t rc = seed_ranged_rows();
    if (rc) return fail_errno(ctx, "seed", rc);
    uint32_t by_b = INDEX_ID("ranged_by_b"), by_ab = INDEX_ID("ranged_a_b_idx_btree");
    static const struct { uint8_t st; uint32_t s; uint8_t et; uint32_t e; uint32_t want; const char *what; } B[] = {
        {0, 3, 0, 6, 20, "b in [3, 6]"},   {1, 3, 1, 6, 10, "b in (3, 6)"}, {0, 3, 1, 6, 15, "b in [3, 6)"},
        {1, 3, 0, 6, 15, "b in (3, 6]"},   {2, 0, 0, 2, 15, "b <= 2"},      {0, 7, 2, 0, 15, "b >= 7"},
        {2, 0, 2, 0, 50, "b unbounded"},   {0, 6, 0, 3, 0, "b in [6, 3]"}, {0, 4, 0, 4, 5, "b in [4, 4]"},
        {1, 4, 1, 4, 0, "b in (4, 4)"},    {2, 0, 1, 0, 0, "b < 0"},        {1, 9, 2, 0, 0, "b > 9"},
    };
    for (uint32_t i = 0; i < sizeof B / sizeof B[0]; i++) {
        bsatn_buf sb = bound_u32(B[i].st, B[i].s), eb = bound_u32(B[i].et, B[i].e);
        stdb_iter it;
        rc = stdb_scan_range(by_b, 0, 0, &sb, &eb, &it, 0, 0);
        if (rc) return fail_errno(ctx, B[i].what, rc);
        EXPECT(B[i].what, count_fixed(&it, 12), B[i].want);
    }
    static const struct { uint8_t pe; uint32_t a; uint8_t st; uint32_t s; uint8_t et; uint32_t e; uint32_t want; const char *what; } AB[] = {
        {0, 0, 0, 1, 0, 2, 20, "a in [1, 2]"},        {0, 0, 0, 3, 2, 0, 20, "a >= 3"},
        {0, 0, 2, 0, 0, 0, 10, "a <= 0"},             {0, 0, 0, 2, 0, 2, 10, "a == 2 via bounds"},
        {1, 2, 0, 3, 0, 5, 3, "a = 2, b in [3, 5]"},  {1, 2, 1, 3, 1, 5, 1, "a = 2, b in (3, 5)"},
        {1, 2, 0, 3, 1, 5, 2, "a = 2, b in [3, 5)"},  {1, 2, 2, 0, 2, 0, 10, "a = 2, b unbounded"},
        {1, 2, 0, 8, 2, 0, 2, "a = 2, b >= 8"},       {1, 7, 2, 0, 2, 0, 0, "a = 7 (absent)"},
        {1, 4, 0, 9, 0, 9, 1, "a = 4, b == 9"},
    };
    for (uint32_t i = 0; i < sizeof AB / sizeof AB[0]; i++) {
        bsatn_buf prefix = buf_new(8);
        if (AB[i].pe) w_u32(&prefix, AB[i].a);
        bsatn_buf sb = bound_u32(AB[i].st, AB[i].s), eb = bound_u32(AB[i].et, AB[i].e);
        stdb_iter it;
        rc = stdb_scan_range(by_ab, &prefix, AB[i].pe, &sb, &eb, &it, 0, 0);
        if (rc) return fail_errno(ctx, AB[i].what, rc);
        EXPECT(AB[i].what, count_fixed(&it, 12), AB[i].want);
    }
    /* Ordered full scan of (a, b) through the deprecated alias: 50 rows in key order. */
    uint32_t h = 0;
    rc = datastore_btree_scan_bsatn(by_ab, &NONNULL, 0, 0, &UNBOUNDED, 1, &UNBOUNDED, 1, &h);
    if (rc) return fail_errno(ctx, "datastore_btree_scan_bsatn", rc);
    stdb_iter it;
    bsatn_reader ch;
    stdb_iter_init(&it, h, 0, 0);
    uint32_t rows = 0, prev = 0;
    while (stdb_iter_next(&it, &ch))
        while (!r_at_end(&ch)) {
            r_u32(&ch);
            uint32_t a = r_u32(&ch), b = r_u32(&ch);
            uint32_t key = a * 100 + b;
            if (rows && key < prev) return fail_expect(ctx, __func__, "(a, b) order: key after", prev, key);
            prev = key;
            rows++;
        }
    EXPECT("full (a, b) scan rows", rows, 50);
    /* Multi-column point scan: (a, b) = (3, 4) → row id 34. */
    uint32_t point[2] = {3, 4};
    rc = stdb_scan_point(by_ab, point, 8, &it, 0, 0);
    if (rc) return fail_errno(ctx, "(a, b) point scan", rc);
    EXPECT("(a, b) = (3, 4) point scan rows", count_fixed(&it, 12), 1);
    /* Single-column point scan on the non-unique b index: 5 rows. */
    uint32_t b7 = 7;
    rc = stdb_scan_point(by_b, &b7, 4, &it, 0, 0);
    if (rc) return fail_errno(ctx, "b point scan", rc);
    EXPECT("b == 7 point scan rows", count_fixed(&it, 12), 5);
    /* Direct index: keys {1, 5, 9, 200}. */
    uint32_t n = 0;
    rc = datastore_delete_by_index_scan_range_bsatn(INDEX_ID("direct_t_k_idx_direct"), &NONNULL, 0, 0, &UNBOUNDED, 1,
                                                    &UNBOUNDED, 1, &n);
    if (rc) return fail_errno(ctx, "direct_t clear", rc);
    static const uint32_t keys[4] = {1, 5, 9, 200};
    for (int i = 0; i < 4; i++) {
        uint32_t r2[2] = {keys[i], keys[i] * 2};
        uint32_t len = 8;
        rc = datastore_insert_bsatn(TABLE_ID("direct_t"), (uint8_t *)r2, &len);
        if (rc) return fail_errno(ctx, "direct_t insert", rc);
    }
    bsatn_buf s2 = bound_u32(0, 2), e10 = bound_u32(0, 10);
    rc = stdb_scan_range(INDEX_ID("direct_t_k_idx_direct"), 0, 0, &s2, &e10, &it, 0, 0);
    if (rc) return fail_errno(ctx, "direct range scan", rc);
    EXPECT("direct k in [2, 10]", count_fixed(&it, 8), 2);
    uint32_t k5 = 5, k6 = 6;
    rc = stdb_scan_point(INDEX_ID("direct_t_k_idx_direct"), &k5, 4, &it, 0, 0);
    if (rc) return fail_errno(ctx, "direct point scan", rc);
    EXPECT("direct k == 5", count_fixed(&it, 8), 1);
    rc = stdb_scan_point(INDEX_ID("direct_t_k_idx_direct"), &k6, 4, &it, 0, 0);
    if (rc) return fail_errno(ctx, "direct point scan", rc);
    EXPECT("direct k == 6", count_fixed(&it, 8), 0);
    /* Range deletes: a = 4, b in [0, 4] → 5 rows; then the alias: a = 1 → 10 rows. */
    uint32_t four = 4, one = 1;
    bsatn_buf s0 = bound_u32(0, 0), e4 = bound_u32(0, 4);
    rc = datastore_delete_by_index_scan_range_bsatn(by_ab, (const uint8_t *)&four, 4, 1, s0.data, s0.len, e4.data,
                                                    e4.len, &n);
    if (rc) return fail_errno(ctx, "delete range a = 4, b in [0, 4]", rc);
    EXPECT("deleted a = 4, b in [0, 4]", n, 5);
    rc = datastore_delete_by_btree_scan_bsatn(by_ab, (const uint8_t *)&one, 4, 1, &UNBOUNDED, 1, &UNBOUNDED, 1, &n);
    if (rc) return fail_errno(ctx, "delete (alias) a = 1", rc);
    EXPECT("deleted a = 1", n, 10);
    uint64_t count = 0;
    rc = datastore_table_row_count(TABLE_ID("ranged"), &count);
    if (rc) return fail_errno(ctx, "row count", rc);
    EXPECT("ranged rows after deletes", count, 35);
    return 0;
}

/* check_autoinc(): write-back of generated columns (one and two sequences), explicit values
 * not advancing the sequence, the custom step sequence 10, 15, 20, 10, ... (wrap at max). */
static int32_t check_autoinc(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint32_t tid = TABLE_ID("counter");
    uint64_t ids[3];
    int32_t steps[3];
    for (int i = 0; i < 3; i++) {
        bsatn_buf row = buf_new(32);
        w_u64(&row, 0);
        w_i32(&row, 0);
        w_str(&row, "auto");
        uint16_t rc = stdb_insert(tid, &row);
        if (rc) return fail_errno(ctx, "counter insert", rc);
        EXPECT("write-back length with two generated columns", row.len, 12);
        bsatn_reader r = reader_new(row.data, row.len);
        ids[i] = r_u64(&r);
        steps[i] = r_i32(&r);
    }
    EXPECT("second id", ids[1], ids[0] + 1);
    EXPECT("third id", ids[2], ids[1] + 1);
    for (int i = 0; i < 3; i++) {
        EXPECT("step within [10, 20]", steps[i] >= 10 && steps[i] <= 20, 1);
        if (i) EXPECT("step sequence (+5, wrapping 20 -> 10)", steps[i], steps[i - 1] == 20 ? 10 : steps[i - 1] + 5);
    }
    /* Explicit non-zero id: no write-back for it, and the id sequence does not advance. */
    bsatn_buf row = buf_new(32);
    w_u64(&row, ids[2] + 1000000);
    w_i32(&row, 0);
    w_str(&row, "explicit id");
    uint16_t rc = stdb_insert(tid, &row);
    if (rc) return fail_errno(ctx, "counter insert explicit id", rc);
    EXPECT("write-back length, step only", row.len, 4);
    row.len = 0;
    w_u64(&row, 0);
    w_i32(&row, 7);
    w_str(&row, "explicit step");
    rc = stdb_insert(tid, &row);
    if (rc) return fail_errno(ctx, "counter insert explicit step", rc);
    EXPECT("write-back length, id only", row.len, 8);
    uint64_t id4;
    __builtin_memcpy(&id4, row.data, 8);
    EXPECT("id after an explicit id", id4, ids[2] + 1);
    row.len = 0;
    w_u64(&row, ids[2] + 2000000);
    w_i32(&row, 3);
    w_str(&row, "all explicit");
    rc = stdb_insert(tid, &row);
    if (rc) return fail_errno(ctx, "counter insert all explicit", rc);
    EXPECT("write-back length, nothing generated", row.len, 0);
    return 0;
}

/* check_iter_buffer_too_small(): a 111-byte kv row; advance with a 4-byte buffer → 11 and the
 * needed size; retry → −1 with the row; the handle is then gone (6); close of an open iter → 0. */
static int32_t check_iter_buffer_too_small(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    char value[100];
    __builtin_memset(value, 'v', sizeof value);
    uint16_t rc = kv_set("big", 3, value, sizeof value);
    if (rc) return fail_errno(ctx, "kv insert", rc);
    bsatn_buf key = buf_new(8);
    w_str(&key, "big");
    uint32_t h = 0;
    rc = datastore_index_scan_point_bsatn(INDEX_ID("kv_key_idx_btree"), key.data, key.len, &h);
    if (rc) return fail_errno(ctx, "point scan", rc);
    EXPECT("iterator handle non-zero", h != 0, 1);
    uint8_t *buf = (uint8_t *)stdb_alloc(256);
    uint32_t len = 4;
    EXPECT("advance with a 4-byte buffer", row_iter_bsatn_advance(h, buf, &len), STDB_BUFFER_TOO_SMALL);
    EXPECT("needed size", len, 111);
    len = 0;
    EXPECT("advance with a 0-byte buffer", row_iter_bsatn_advance(h, buf, &len), STDB_BUFFER_TOO_SMALL);
    EXPECT("needed size again", len, 111);
    len = 111;
    EXPECT("advance with the needed size", row_iter_bsatn_advance(h, buf, &len), STDB_EXHAUSTED);
    EXPECT("bytes copied", len, 111);
    bsatn_reader r = reader_new(buf, len);
    stdb_str k = r_str(&r), v = r_str(&r);
    EXPECT("row key is big", str_eq(k, "big"), 1);
    EXPECT("row value length", v.len, 100);
    len = 256;
    EXPECT("advance after exhaustion", row_iter_bsatn_advance(h, buf, &len), STDB_NO_SUCH_ITER);
    /* An empty scan: −1 with length 0 on the first call. */
    bsatn_buf nokey = buf_new(8);
    w_str(&nokey, "no such key");
    rc = datastore_index_scan_point_bsatn(INDEX_ID("kv_key_idx_btree"), nokey.data, nokey.len, &h);
    if (rc) return fail_errno(ctx, "empty point scan", rc);
    len = 256;
    EXPECT("advance on an empty scan", row_iter_bsatn_advance(h, buf, &len), STDB_EXHAUSTED);
    EXPECT("length of an empty scan", len, 0);
    /* Closing an open iterator. */
    rc = datastore_table_scan_bsatn(TABLE_ID("kv"), &h);
    if (rc) return fail_errno(ctx, "table scan", rc);
    EXPECT("row_iter_bsatn_close(open)", row_iter_bsatn_close(h), 0);
    len = 256;
    EXPECT("advance after close", row_iter_bsatn_advance(h, buf, &len), STDB_NO_SUCH_ITER);
    /* Scans are snapshots: delete while iterating still yields every row. */
    uint64_t count = 0;
    rc = datastore_table_row_count(TABLE_ID("kv"), &count);
    if (rc) return fail_errno(ctx, "row count", rc);
    stdb_iter it;
    bsatn_reader ch;
    rc = stdb_scan_table(TABLE_ID("kv"), &it, 0, 0);
    if (rc) return fail_errno(ctx, "table scan", rc);
    uint32_t seen = 0;
    bool deleted = false;
    while (stdb_iter_next(&it, &ch))
        while (!r_at_end(&ch) && !ch.err) {
            r_str(&ch); r_str(&ch);
            seen++;
            if (!deleted) {
                uint32_t n;
                rc = datastore_delete_by_index_scan_point_bsatn(INDEX_ID("kv_key_idx_btree"), key.data, key.len, &n);
                if (rc) return fail_errno(ctx, "delete during scan", rc);
                EXPECT("deleted big", n, 1);
                deleted = true;
            }
        }
    EXPECT("rows seen by a scan opened before a delete", seen, count);
    return 0;
}

/* check_sources(data: Vec<u8>) — raw args: data[i] must be i % 251. Checks remaining_length,
 * reads of 3 bytes (0 until the last, −1 at the end), a 0-byte read, and errno 8 afterwards. */
static int32_t check_sources(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint32_t src = ctx->args_source;
    EXPECT("args source non-zero", src != 0, 1);
    uint32_t total = 0;
    EXPECT("bytes_source_remaining_length", bytes_source_remaining_length(src, &total), 0);
    EXPECT("remaining length >= 4", total >= 4, 1);
    uint8_t *data = (uint8_t *)stdb_alloc(total + 3);
    uint32_t got = 0, len = 0;
    EXPECT("0-byte read on a non-empty source", bytes_source_read(src, data, &len), 0);
    EXPECT("0-byte read length", len, 0);
    for (;;) {
        len = 3;
        int16_t rc = bytes_source_read(src, data + got, &len);
        got += len;
        if (rc == STDB_EXHAUSTED) break;
        EXPECT("bytes_source_read", rc, 0);
        EXPECT("read length of a 3-byte read", len, 3);
        uint32_t left = 0;
        EXPECT("remaining_length mid-read", bytes_source_remaining_length(src, &left), 0);
        EXPECT("remaining after a read", left, total - got);
    }
    EXPECT("bytes read in total", got, total);
    len = 3;
    EXPECT("read after exhaustion", bytes_source_read(src, data, &len), STDB_NO_SUCH_BYTES);
    EXPECT("remaining_length after exhaustion", bytes_source_remaining_length(src, &len), STDB_NO_SUCH_BYTES);
    bsatn_reader r = reader_new(data, got);
    uint32_t n = r_u32(&r);
    EXPECT("Vec<u8> length prefix", n, total - 4);
    for (uint32_t i = 0; i < n; i++)
        if (data[4 + i] != i % 251) return fail_expect(ctx, __func__, "data[i] == i % 251 at i", i, data[4 + i]);
    return 0;
}

/* check_update(): datastore_update_bsatn and unique-constraint semantics (kv, user_email, hashed). */
static int32_t check_update(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint32_t kv = TABLE_ID("kv"), kv_pk = INDEX_ID("kv_key_idx_btree");
    uint64_t before = 0, after = 0;
    uint16_t rc = kv_set("upd", 3, "v1", 2);
    if (rc) return fail_errno(ctx, "kv set", rc);
    bsatn_buf row = buf_new(32);
    kv_row(&row, "upd", 3, "v2", 2);
    EXPECT("update kv[upd] = v2", stdb_update(kv, kv_pk, &row), 0);
    EXPECT("update write-back length", row.len, 0);
    stdb_str v;
    EXPECT("kv[upd] present", kv_get("upd", 3, &v), 1);
    EXPECT("kv[upd] == v2", str_eq(v, "v2"), 1);
    row.len = 0;
    kv_row(&row, "upd-missing", 11, "x", 1);
    EXPECT("update of a missing key", stdb_update(kv, kv_pk, &row), STDB_NO_SUCH_ROW);
    row.len = 0;
    kv_row(&row, "upd", 3, "v2", 2);
    EXPECT("update with another table's index", stdb_update(kv, INDEX_ID("ranged_id_idx_btree"), &row),
           STDB_NO_SUCH_INDEX);
    datastore_table_row_count(kv, &before);
    row.len = 0;
    kv_row(&row, "upd", 3, "v2", 2);
    EXPECT("insert of an identical row (set semantics)", stdb_insert(kv, &row), 0);
    datastore_table_row_count(kv, &after);
    EXPECT("row count after identical insert", after, before);
    row.len = 0;
    kv_row(&row, "upd", 3, "other", 5);
    EXPECT("insert of a duplicate key", stdb_insert(kv, &row), STDB_UNIQUE_ALREADY_EXISTS);
    /* user_email: two unique columns. */
    uint32_t ue = TABLE_ID("user_email"), ue_pk = INDEX_ID("user_email_id_idx_btree");
    uint32_t n;
    datastore_delete_by_index_scan_range_bsatn(ue_pk, &NONNULL, 0, 0, &UNBOUNDED, 1, &UNBOUNDED, 1, &n);
    row.len = 0; w_u32(&row, 1); w_str(&row, "a@x");
    EXPECT("insert user_email 1", stdb_insert(ue, &row), 0);
    row.len = 0; w_u32(&row, 2); w_str(&row, "b@x");
    EXPECT("insert user_email 2", stdb_insert(ue, &row), 0);
    row.len = 0; w_u32(&row, 3); w_str(&row, "a@x");
    EXPECT("insert duplicate email", stdb_insert(ue, &row), STDB_UNIQUE_ALREADY_EXISTS);
    row.len = 0; w_u32(&row, 1); w_str(&row, "b@x");
    EXPECT("update id 1 to a taken email", stdb_update(ue, ue_pk, &row), STDB_UNIQUE_ALREADY_EXISTS);
    row.len = 0; w_u32(&row, 1); w_str(&row, "c@x");
    EXPECT("update id 1 to a free email", stdb_update(ue, ue_pk, &row), 0);
    row.len = 0; w_u32(&row, 7); w_str(&row, "c@x");
    EXPECT("update via the email index (changes id 1 -> 7)",
           stdb_update(ue, INDEX_ID("user_email_email_idx_btree"), &row), 0);
    uint32_t one = 1, seven = 7;
    stdb_iter it;
    stdb_scan_point(ue_pk, &one, 4, &it, 0, 0);
    EXPECT("rows with id 1", count_fixed(&it, 11), 0);
    stdb_scan_point(ue_pk, &seven, 4, &it, 0, 0);
    EXPECT("rows with id 7", count_fixed(&it, 11), 1);
    /* hashed: update through a unique hash index. */
    uint32_t hs = TABLE_ID("hashed"), code_idx = INDEX_ID("hashed_code_idx_hash");
    datastore_delete_by_index_scan_range_bsatn(INDEX_ID("hashed_id_idx_btree"), &NONNULL, 0, 0, &UNBOUNDED, 1,
                                               &UNBOUNDED, 1, &n);
    row.len = 0; w_u32(&row, 1); w_str(&row, "n"); w_u64(&row, 77);
    EXPECT("insert hashed", stdb_insert(hs, &row), 0);
    row.len = 0; w_u32(&row, 2); w_str(&row, "n"); w_u64(&row, 78);
    EXPECT("insert hashed 2", stdb_insert(hs, &row), 0);
    row.len = 0; w_u32(&row, 9); w_str(&row, "m"); w_u64(&row, 77);
    EXPECT("update via the unique hash index", stdb_update(hs, code_idx, &row), 0);
    bsatn_buf name = buf_new(8);
    w_str(&name, "n");
    stdb_scan_point(INDEX_ID("hashed_name_idx_hash"), name.data, name.len, &it, 0, 0);
    EXPECT("hash point scan name == n", count_fixed(&it, 17), 1);
    row.len = 0; w_u32(&row, 9); w_str(&row, "m"); w_u64(&row, 77);
    EXPECT("update via the non-unique hash index", stdb_update(hs, INDEX_ID("hashed_name_idx_hash"), &row),
           STDB_INDEX_NOT_UNIQUE);
    return 0;
}

/* check_deletes(): delete_all_by_eq (present + absent rows), delete by point (hit, miss). */
static int32_t check_deletes(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    uint32_t kv = TABLE_ID("kv");
    kv_set("d1", 2, "1", 1);
    kv_set("d2", 2, "2", 1);
    kv_set("d3", 2, "3", 1);
    uint64_t before = 0, after = 0;
    datastore_table_row_count(kv, &before);
    bsatn_buf rel = buf_new(64);
    w_vec_len(&rel, 3);
    kv_row(&rel, "d1", 2, "1", 1);
    kv_row(&rel, "d3", 2, "wrong value", 11);
    kv_row(&rel, "zz", 2, "absent", 6);
    uint32_t n = 99;
    EXPECT("delete_all_by_eq", datastore_delete_all_by_eq_bsatn(kv, rel.data, rel.len, &n), 0);
    EXPECT("rows deleted by eq", n, 1);
    bsatn_buf key = buf_new(16);
    w_str(&key, "d2");
    EXPECT("delete by point", datastore_delete_by_index_scan_point_bsatn(INDEX_ID("kv_key_idx_btree"), key.data,
                                                                          key.len, &n), 0);
    EXPECT("rows deleted by point", n, 1);
    EXPECT("delete by point again", datastore_delete_by_index_scan_point_bsatn(INDEX_ID("kv_key_idx_btree"), key.data,
                                                                                key.len, &n), 0);
    EXPECT("rows deleted by point again", n, 0);
    datastore_table_row_count(kv, &after);
    EXPECT("row count after deletes", after, before - 2);
    /* Table scan agrees with row count. */
    stdb_iter it;
    bsatn_reader ch;
    stdb_scan_table(kv, &it, 0, 0);
    uint64_t seen = 0;
    while (stdb_iter_next(&it, &ch))
        while (!r_at_end(&ch) && !ch.err) { r_str(&ch); r_str(&ch); seen++; }
    EXPECT("table scan rows == row count", seen, after);
    /* Leave no d* rows behind. */
    key.len = 0;
    w_str(&key, "d3");
    datastore_delete_by_index_scan_point_bsatn(INDEX_ID("kv_key_idx_btree"), key.data, key.len, &n);
    return 0;
}

/* ================================================================ params */

static void p_row(bsatn_buf *b, uint32_t ref) { params_begin(b, 1); ty_elem(b, "row"); ty_ref(b, ref); }
enum { REF_POINT, REF_SHAPE, REF_COLOR, REF_EVERY, REF_RANGED, REF_DIRECT, REF_KV, REF_USER_EMAIL, REF_COUNTER,
       REF_AUTOINC_U8, REF_ONESHOT, REF_REPEATING, REF_FIRED, REF_SECRET, REF_PRIVATE, REF_JWT, REF_LIFECYCLE,
       REF_HASHED };
static void p_every(bsatn_buf *b) { p_row(b, REF_EVERY); }
static void p_oneshot(bsatn_buf *b) { p_row(b, REF_ONESHOT); }
static void p_repeating(bsatn_buf *b) { p_row(b, REF_REPEATING); }
static void p_key_value(bsatn_buf *b) {
    params_begin(b, 2); ty_elem(b, "key"); ty_prim(b, TY_STRING); ty_elem(b, "value"); ty_prim(b, TY_STRING);
}
static void p_key(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "key"); ty_prim(b, TY_STRING); }
static void p_key_size(bsatn_buf *b) {
    params_begin(b, 2); ty_elem(b, "key"); ty_prim(b, TY_STRING); ty_elem(b, "size"); ty_prim(b, TY_U32);
}
static void p_data(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "data"); ty_prim(b, TY_STRING); }
static void p_text(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "text"); ty_prim(b, TY_STRING); }
static void p_note(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "note"); ty_prim(b, TY_STRING); }
static void p_payload(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "payload"); ty_prim(b, TY_STRING); }
static void p_message(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "message"); ty_prim(b, TY_STRING); }
static void p_code(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "code"); ty_prim(b, TY_I32); }
static void p_bytes(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "data"); ty_bytes(b); }
static void p_oneshot_sched(bsatn_buf *b) {
    params_begin(b, 2); ty_elem(b, "delay_micros"); ty_prim(b, TY_I64); ty_elem(b, "payload"); ty_prim(b, TY_STRING);
}
static void p_repeating_sched(bsatn_buf *b) {
    params_begin(b, 2); ty_elem(b, "interval_micros"); ty_prim(b, TY_I64); ty_elem(b, "max_fires"); ty_prim(b, TY_U32);
}
static void p_cancel(bsatn_buf *b) {
    params_begin(b, 2); ty_elem(b, "repeating"); ty_prim(b, TY_BOOL); ty_elem(b, "id"); ty_prim(b, TY_U64);
}
static void p_scan_b(bsatn_buf *b) {
    params_begin(b, 5);
    ty_elem(b, "start_tag"); ty_prim(b, TY_U8); ty_elem(b, "start"); ty_prim(b, TY_U32);
    ty_elem(b, "end_tag"); ty_prim(b, TY_U8); ty_elem(b, "end"); ty_prim(b, TY_U32);
    ty_elem(b, "expected"); ty_prim(b, TY_U32);
}
static void p_scan_ab(bsatn_buf *b) {
    params_begin(b, 7);
    ty_elem(b, "prefix_elems"); ty_prim(b, TY_U8); ty_elem(b, "a"); ty_prim(b, TY_U32);
    ty_elem(b, "start_tag"); ty_prim(b, TY_U8); ty_elem(b, "start"); ty_prim(b, TY_U32);
    ty_elem(b, "end_tag"); ty_prim(b, TY_U8); ty_elem(b, "end"); ty_prim(b, TY_U32);
    ty_elem(b, "expected"); ty_prim(b, TY_U32);
}

/* Reducer ids are positions in this table (README.md lists them). */
static const stdb_reducer_def REDUCERS[] = {
    {"init", STDB_INIT, 0, init, 0},
    {"client_connected", STDB_ON_CONNECT, 0, client_connected, 0},
    {"client_disconnected", STDB_ON_DISCONNECT, 0, client_disconnected, 0},
    {"insert_every_type", STDB_NO_LIFECYCLE, p_every, insert_every_type, 0},
    {"every_type_roundtrip", STDB_NO_LIFECYCLE, p_every, every_type_roundtrip, 0},
    {"set_kv", STDB_NO_LIFECYCLE, p_key_value, set_kv, 0},
    {"delete_kv", STDB_NO_LIFECYCLE, p_key, delete_kv, 0},
    {"big_row", STDB_NO_LIFECYCLE, p_key_size, big_row, 0},
    {"insert_secret", STDB_NO_LIFECYCLE, p_data, insert_secret, 0},
    {"insert_private", STDB_NO_LIFECYCLE, p_text, insert_private, 0},
    {"insert_autoinc_u8", STDB_NO_LIFECYCLE, p_note, insert_autoinc_u8, 0},
    {"seed_ranged", STDB_NO_LIFECYCLE, 0, seed_ranged, 0},
    {"scan_ranged_b", STDB_NO_LIFECYCLE, p_scan_b, scan_ranged_b, 0},
    {"scan_ranged_ab", STDB_NO_LIFECYCLE, p_scan_ab, scan_ranged_ab, 0},
    {"schedule_oneshot", STDB_NO_LIFECYCLE, p_oneshot_sched, schedule_oneshot, 0},
    {"schedule_repeating", STDB_NO_LIFECYCLE, p_repeating_sched, schedule_repeating, 0},
    {"cancel_schedule", STDB_NO_LIFECYCLE, p_cancel, cancel_schedule, 0},
    {"run_oneshot", STDB_NO_LIFECYCLE, p_oneshot, run_oneshot, 0},
    {"run_repeating", STDB_NO_LIFECYCLE, p_repeating, run_repeating, 0},
    {"schedule_immediate", STDB_NO_LIFECYCLE, p_payload, schedule_immediate, 0},
    {"record_immediate", STDB_NO_LIFECYCLE, p_payload, record_immediate, 0},
    {"check_schedule_too_long", STDB_NO_LIFECYCLE, 0, check_schedule_too_long, 0},
    {"fail_with", STDB_NO_LIFECYCLE, p_message, fail_with, 0},
    {"return_code", STDB_NO_LIFECYCLE, p_code, return_code, 0},
    {"insert_then_fail", STDB_NO_LIFECYCLE, p_key, insert_then_fail, 0},
    {"panic_trap", STDB_NO_LIFECYCLE, 0, panic_trap, 0},
    {"insert_then_trap", STDB_NO_LIFECYCLE, p_key, insert_then_trap, 0},
    {"infinite_loop", STDB_NO_LIFECYCLE, 0, infinite_loop, 0},
    {"log_levels", STDB_NO_LIFECYCLE, 0, log_levels, 0},
    {"whoami", STDB_NO_LIFECYCLE, 0, whoami, 0},
    {"record_jwt", STDB_NO_LIFECYCLE, 0, record_jwt, 0},
    {"check_preinit", STDB_NO_LIFECYCLE, 0, check_preinit, 0},
    {"check_errnos", STDB_NO_LIFECYCLE, 0, check_errnos, 0},
    {"check_range_scans", STDB_NO_LIFECYCLE, 0, check_range_scans, 0},
    {"check_autoinc", STDB_NO_LIFECYCLE, 0, check_autoinc, 0},
    {"check_iter_buffer_too_small", STDB_NO_LIFECYCLE, 0, check_iter_buffer_too_small, 0},
    {"check_sources", STDB_NO_LIFECYCLE, p_bytes, check_sources, 1},
    {"check_update", STDB_NO_LIFECYCLE, 0, check_update, 0},
    {"check_deletes", STDB_NO_LIFECYCLE, 0, check_deletes, 0},
};

/* ================================================================ module definition */

/* A table whose first column is `id`-like: pk + unique + btree (+ auto_inc sequence). */
static md_table *pk_table(md_builder *md, const char *name, uint32_t ref, uint8_t access, const char *pk_name,
                          bool auto_inc) {
    md_table *t = md_table_begin(md, name, ref, access);
    md_pk_unique_btree(t, 0, pk_name);
    if (auto_inc) md_sequence(t, NULL, 0, 1);
    return t;
}

static void describe(md_builder *md) {
    bsatn_buf *ts = &md->typespace;
    /* REF_POINT */
    md_type(md);
    ty_product(ts, 2); ty_elem(ts, "x"); ty_prim(ts, TY_I32); ty_elem(ts, "y"); ty_prim(ts, TY_I32);
    /* REF_SHAPE: Circle(u32) | Rect(Point) | Empty */
    md_type(md);
    ty_sum(ts, 3);
    ty_variant(ts, "Circle"); ty_prim(ts, TY_U32);
    ty_variant(ts, "Rect"); ty_ref(ts, REF_POINT);
    ty_variant(ts, "Empty"); ty_unit(ts);
    /* REF_COLOR: a plain enum */
    md_type(md);
    ty_sum(ts, 3); ty_variant(ts, "Red"); ty_unit(ts); ty_variant(ts, "Green"); ty_unit(ts);
    ty_variant(ts, "Blue"); ty_unit(ts);
    /* REF_EVERY */
    md_type(md);
    ty_product(ts, 30);
    ty_elem(ts, "id"); ty_prim(ts, TY_U32);
    ty_elem(ts, "b"); ty_prim(ts, TY_BOOL);
    ty_elem(ts, "i8"); ty_prim(ts, TY_I8);
    ty_elem(ts, "u8"); ty_prim(ts, TY_U8);
    ty_elem(ts, "i16"); ty_prim(ts, TY_I16);
    ty_elem(ts, "u16"); ty_prim(ts, TY_U16);
    ty_elem(ts, "i32"); ty_prim(ts, TY_I32);
    ty_elem(ts, "u32"); ty_prim(ts, TY_U32);
    ty_elem(ts, "i64"); ty_prim(ts, TY_I64);
    ty_elem(ts, "u64"); ty_prim(ts, TY_U64);
    ty_elem(ts, "i128"); ty_prim(ts, TY_I128);
    ty_elem(ts, "u128"); ty_prim(ts, TY_U128);
    ty_elem(ts, "i256"); ty_prim(ts, TY_I256);
    ty_elem(ts, "u256"); ty_prim(ts, TY_U256);
    ty_elem(ts, "f32"); ty_prim(ts, TY_F32);
    ty_elem(ts, "f64"); ty_prim(ts, TY_F64);
    ty_elem(ts, "s"); ty_prim(ts, TY_STRING);
    ty_elem(ts, "bytes"); ty_bytes(ts);
    ty_elem(ts, "ints"); ty_array(ts); ty_prim(ts, TY_I32);
    ty_elem(ts, "strs"); ty_array(ts); ty_prim(ts, TY_STRING);
    ty_elem(ts, "point"); ty_ref(ts, REF_POINT);
    ty_elem(ts, "points"); ty_array(ts); ty_ref(ts, REF_POINT);
    ty_elem(ts, "shape"); ty_ref(ts, REF_SHAPE);
    ty_elem(ts, "color"); ty_ref(ts, REF_COLOR);
    ty_elem(ts, "opt"); ty_option(ts, TY_I32);
    ty_elem(ts, "identity"); ty_identity(ts);
    ty_elem(ts, "connection_id"); ty_connection_id(ts);
    ty_elem(ts, "timestamp"); ty_timestamp(ts);
    ty_elem(ts, "duration"); ty_time_duration(ts);
    ty_elem(ts, "schedule_at"); ty_schedule_at(ts);
    /* REF_RANGED */
    md_type(md);
    ty_product(ts, 3); ty_elem(ts, "id"); ty_prim(ts, TY_U32); ty_elem(ts, "a"); ty_prim(ts, TY_U32);
    ty_elem(ts, "b"); ty_prim(ts, TY_U32);
    /* REF_DIRECT */
    md_type(md);
    ty_product(ts, 2); ty_elem(ts, "k"); ty_prim(ts, TY_U32); ty_elem(ts, "v"); ty_prim(ts, TY_U32);
    /* REF_KV */
    md_type(md);
    ty_product(ts, 2); ty_elem(ts, "key"); ty_prim(ts, TY_STRING); ty_elem(ts, "value"); ty_prim(ts, TY_STRING);
    /* REF_USER_EMAIL */
    md_type(md);
    ty_product(ts, 2); ty_elem(ts, "id"); ty_prim(ts, TY_U32); ty_elem(ts, "email"); ty_prim(ts, TY_STRING);
    /* REF_COUNTER */
    md_type(md);
    ty_product(ts, 3); ty_elem(ts, "id"); ty_prim(ts, TY_U64); ty_elem(ts, "step"); ty_prim(ts, TY_I32);
    ty_elem(ts, "label"); ty_prim(ts, TY_STRING);
    /* REF_AUTOINC_U8 */
    md_type(md);
    ty_product(ts, 2); ty_elem(ts, "id"); ty_prim(ts, TY_U8); ty_elem(ts, "note"); ty_prim(ts, TY_STRING);
    /* REF_ONESHOT */
    md_type(md);
    ty_product(ts, 3); ty_elem(ts, "scheduled_id"); ty_prim(ts, TY_U64); ty_elem(ts, "scheduled_at");
    ty_schedule_at(ts); ty_elem(ts, "payload"); ty_prim(ts, TY_STRING);
    /* REF_REPEATING */
    md_type(md);
    ty_product(ts, 3); ty_elem(ts, "scheduled_id"); ty_prim(ts, TY_U64); ty_elem(ts, "scheduled_at");
    ty_schedule_at(ts); ty_elem(ts, "max_fires"); ty_prim(ts, TY_U32);
    /* REF_FIRED */
    md_type(md);
    ty_product(ts, 6); ty_elem(ts, "id"); ty_prim(ts, TY_U64); ty_elem(ts, "source"); ty_prim(ts, TY_STRING);
    ty_elem(ts, "ref_id"); ty_prim(ts, TY_U64); ty_elem(ts, "payload"); ty_prim(ts, TY_STRING);
    ty_elem(ts, "at"); ty_timestamp(ts); ty_elem(ts, "sender"); ty_identity(ts);
    /* REF_SECRET */
    md_type(md);
    ty_product(ts, 3); ty_elem(ts, "id"); ty_prim(ts, TY_U64); ty_elem(ts, "owner"); ty_identity(ts);
    ty_elem(ts, "data"); ty_prim(ts, TY_STRING);
    /* REF_PRIVATE */
    md_type(md);
    ty_product(ts, 2); ty_elem(ts, "id"); ty_prim(ts, TY_U64); ty_elem(ts, "text"); ty_prim(ts, TY_STRING);
    /* REF_JWT */
    md_type(md);
    ty_product(ts, 4); ty_elem(ts, "id"); ty_prim(ts, TY_U64); ty_elem(ts, "connection_id"); ty_connection_id(ts);
    ty_elem(ts, "present"); ty_prim(ts, TY_BOOL); ty_elem(ts, "payload"); ty_prim(ts, TY_STRING);
    /* REF_LIFECYCLE */
    md_type(md);
    ty_product(ts, 5); ty_elem(ts, "id"); ty_prim(ts, TY_U64); ty_elem(ts, "kind"); ty_prim(ts, TY_STRING);
    ty_elem(ts, "sender"); ty_identity(ts); ty_elem(ts, "connection_id"); ty_connection_id(ts);
    ty_elem(ts, "at"); ty_timestamp(ts);
    /* REF_HASHED */
    md_type(md);
    ty_product(ts, 3); ty_elem(ts, "id"); ty_prim(ts, TY_U32); ty_elem(ts, "name"); ty_prim(ts, TY_STRING);
    ty_elem(ts, "code"); ty_prim(ts, TY_U64);

    md_table *t;
    md_table_end(pk_table(md, "every_type", REF_EVERY, MD_PUBLIC, "id", false));

    t = pk_table(md, "ranged", REF_RANGED, MD_PUBLIC, "id", false);
    static const uint16_t ab[2] = {1, 2}, b[1] = {2};
    md_index(t, NULL, "a_b", MD_BTREE, 2, ab);
    md_index(t, "ranged_by_b", "b", MD_BTREE, 1, b);
    md_table_end(t);

    t = md_table_begin(md, "direct_t", REF_DIRECT, MD_PUBLIC);
    static const uint16_t k[1] = {0};
    md_index(t, NULL, "k", MD_DIRECT, 1, k);
    md_unique(t, NULL, 1, k);
    md_table_end(t);

    md_table_end(pk_table(md, "kv", REF_KV, MD_PUBLIC, "key", false));

    t = pk_table(md, "user_email", REF_USER_EMAIL, MD_PUBLIC, "id", false);
    md_unique_btree(t, 1, "email");
    md_table_end(t);

    t = pk_table(md, "counter", REF_COUNTER, MD_PUBLIC, "id", true);
    md_sequence_full(t, "counter_step_custom_seq", 1, true, 10, true, 10, true, 20, 5);
    md_table_end(t);

    md_table_end(pk_table(md, "autoinc_u8", REF_AUTOINC_U8, MD_PUBLIC, "id", true));

    t = pk_table(md, "oneshot", REF_ONESHOT, MD_PUBLIC, "scheduled_id", true);
    md_schedule(t, NULL, "run_oneshot", 1);
    md_table_end(t);

    t = pk_table(md, "repeating", REF_REPEATING, MD_PUBLIC, "scheduled_id", true);
    md_schedule(t, NULL, "run_repeating", 1);
    md_table_end(t);

    t = pk_table(md, "fired", REF_FIRED, MD_PUBLIC, "id", true);
    static const uint16_t src_ref[2] = {1, 2};
    md_index(t, NULL, "source_ref_id", MD_BTREE, 2, src_ref);
    md_table_end(t);

    md_table_end(pk_table(md, "secret", REF_SECRET, MD_PUBLIC, "id", true));
    md_table_end(pk_table(md, "private_note", REF_PRIVATE, MD_PRIVATE, "id", true));
    md_table_end(pk_table(md, "jwt_record", REF_JWT, MD_PUBLIC, "id", true));
    md_table_end(pk_table(md, "lifecycle_event", REF_LIFECYCLE, MD_PUBLIC, "id", true));

    t = pk_table(md, "hashed", REF_HASHED, MD_PUBLIC, "id", false);
    static const uint16_t name_col[1] = {1}, code_col[1] = {2};
    md_index(t, NULL, "name", MD_HASH, 1, name_col);
    md_index(t, NULL, "code", MD_HASH, 1, code_col);
    md_unique(t, NULL, 1, code_col);
    md_table_end(t);

    static const char *const type_names[] = {"Point", "Shape", "Color", "EveryType", "Ranged", "DirectT", "Kv",
                                             "UserEmail", "Counter", "AutoincU8", "OneShot", "Repeating", "Fired",
                                             "Secret", "PrivateNote", "JwtRecord", "LifecycleEvent", "Hashed"};
    for (uint32_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) md_typedef(md, type_names[i], i);

    md_rls(md, "SELECT * FROM secret WHERE secret.owner = :sender");
}

STDB_MODULE(REDUCERS, describe)
