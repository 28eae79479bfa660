/* quickstart-chat — the official SpacetimeDB quickstart chat module, in C.
 *
 * Same tables, columns, reducers (and reducer order), index/constraint shapes, validation
 * errors and log lines as templates/chat-console-rs/spacetimedb/src/lib.rs at v1.12.0; its
 * describe output is byte-identical to the official Rust build. See README.md.
 */
#define STDB_LOG_TARGET "quickstart_chat_module"
#include "moduledef.h"

/* User row: identity Identity (pk), name Option<String>, online bool. */
typedef struct {
    uint8_t identity[32];
    bool has_name;
    stdb_str name;
    bool online;
} user_row;

static void write_user(bsatn_buf *b, const user_row *u) {
    w_raw(b, u->identity, 32);
    if (u->has_name) { w_some(b); w_strn(b, u->name.ptr, u->name.len); }
    else w_none(b);
    w_bool(b, u->online);
}

static uint8_t find_buf[512];

/* ctx.db.user().identity().find(ctx.sender): true and fills *out when a row exists. */
static bool find_user(const uint8_t identity[32], user_row *out) {
    stdb_iter it;
    bsatn_reader ch;
    if (stdb_scan_point(INDEX_ID("user_identity_idx_btree"), identity, 32, &it, find_buf, sizeof find_buf))
        STDB_PANIC("user index scan failed");
    bool found = false;
    while (stdb_iter_next(&it, &ch)) {
        while (!r_at_end(&ch) && !ch.err) {
            r_raw(&ch, out->identity, 32);
            out->has_name = r_some(&ch);
            if (out->has_name) out->name = r_str(&ch);
            out->online = r_bool(&ch);
            found = true;
        }
    }
    return found;
}

static void update_user(const user_row *u) {
    bsatn_buf row = buf_new(64 + u->name.len);
    write_user(&row, u);
    if (stdb_update(TABLE_ID("user"), INDEX_ID("user_identity_idx_btree"), &row)) STDB_PANIC("user update failed");
}

static void identity_text(bsatn_buf *b, const uint8_t id[32]) { buf_text_hex_be(b, id, 32); }

static int32_t set_name(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str name = r_str(args);
    if (args->err) return stdb_fail(ctx, "failed to decode reducer arguments");
    if (name.len == 0) return stdb_fail(ctx, "Names must not be empty");
    user_row u;
    if (!find_user(ctx->sender, &u)) return stdb_fail(ctx, "Cannot set name for unknown user");
    bsatn_buf msg = buf_new(128 + name.len);
    buf_text(&msg, "User ");
    identity_text(&msg, ctx->sender);
    buf_text(&msg, " sets name to ");
    buf_textn(&msg, name.ptr, name.len);
    STDB_LOG_BUF(STDB_LOG_INFO, &msg);
    u.has_name = true;
    u.name = name;
    update_user(&u);
    return 0;
}

static int32_t send_message(stdb_ctx *ctx, bsatn_reader *args) {
    stdb_str text = r_str(args);
    if (args->err) return stdb_fail(ctx, "failed to decode reducer arguments");
    if (text.len == 0) return stdb_fail(ctx, "Messages must not be empty");
    bsatn_buf msg = buf_new(128 + text.len);
    buf_text(&msg, "User ");
    identity_text(&msg, ctx->sender);
    buf_text(&msg, ": ");
    buf_textn(&msg, text.ptr, text.len);
    STDB_LOG_BUF(STDB_LOG_INFO, &msg);
    bsatn_buf row = buf_new(48 + text.len);
    w_raw(&row, ctx->sender, 32);
    w_i64(&row, ctx->timestamp);
    w_strn(&row, text.ptr, text.len);
    if (stdb_insert(TABLE_ID("message"), &row)) STDB_PANIC("message insert failed");
    return 0;
}

static int32_t init(stdb_ctx *ctx, bsatn_reader *args) {
    (void)ctx; (void)args;
    return 0;
}

static int32_t identity_connected(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    user_row u;
    if (find_user(ctx->sender, &u)) {
        u.online = true;
        update_user(&u);
    } else {
        __builtin_memcpy(u.identity, ctx->sender, 32);
        u.has_name = false;
        u.name.len = 0;
        u.online = true;
        bsatn_buf row = buf_new(64);
        write_user(&row, &u);
        if (stdb_insert(TABLE_ID("user"), &row)) STDB_PANIC("user insert failed");
    }
    return 0;
}

static int32_t identity_disconnected(stdb_ctx *ctx, bsatn_reader *args) {
    (void)args;
    user_row u;
    if (find_user(ctx->sender, &u)) {
        u.online = false;
        update_user(&u);
    } else {
        bsatn_buf msg = buf_new(160);
        buf_text(&msg, "Disconnect event for unknown user with identity Identity(\"");
        identity_text(&msg, ctx->sender);
        buf_text(&msg, "\")");
        STDB_LOG_BUF(STDB_LOG_WARN, &msg);
    }
    return 0;
}

static void params_text(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "text"); ty_prim(b, TY_STRING); }
static void params_name(bsatn_buf *b) { params_begin(b, 1); ty_elem(b, "name"); ty_prim(b, TY_STRING); }

/* Alphabetical, as the Rust library's sorted `__preinit__20_register_describer_*` give it. */
static const stdb_reducer_def REDUCERS[] = {
    {"identity_connected", STDB_ON_CONNECT, 0, identity_connected},
    {"identity_disconnected", STDB_ON_DISCONNECT, 0, identity_disconnected},
    {"init", STDB_INIT, 0, init},
    {"send_message", STDB_NO_LIFECYCLE, params_text, send_message},
    {"set_name", STDB_NO_LIFECYCLE, params_name, set_name},
};

static void describe(md_builder *md) {
    bsatn_buf *ts = &md->typespace;
    uint32_t message_ref = md_type(md);
    ty_product(ts, 3);
    ty_elem(ts, "sender"); ty_identity(ts);
    ty_elem(ts, "sent"); ty_timestamp(ts);
    ty_elem(ts, "text"); ty_prim(ts, TY_STRING);
    uint32_t user_ref = md_type(md);
    ty_product(ts, 3);
    ty_elem(ts, "identity"); ty_identity(ts);
    ty_elem(ts, "name"); ty_option(ts, TY_STRING);
    ty_elem(ts, "online"); ty_prim(ts, TY_BOOL);

    md_table_end(md_table_begin(md, "message", message_ref, MD_PUBLIC));
    md_table *t = md_table_begin(md, "user", user_ref, MD_PUBLIC);
    md_pk_unique_btree(t, 0, "identity");
    md_table_end(t);

    md_typedef(md, "Message", message_ref);
    md_typedef(md, "User", user_ref);
}

STDB_MODULE(REDUCERS, describe)
