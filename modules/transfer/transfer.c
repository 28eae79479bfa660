/* transfer — the keynote benchmark module: bank accounts and transfers between them.
 *
 * Kept lean on purpose: table/index ids cached in statics, point scans on the primary-key
 * index into fixed buffers, updates via datastore_update_bsatn, no allocation per call.
 * See README.md for the exact behaviour.
 */
#define STDB_LOG_TARGET "transfer"
#include "moduledef.h"

#define ROW_SIZE 12 /* id u32 + balance i64 */
#define PK_INDEX "accounts_id_idx_btree"

static uint8_t scan_buf[256];

/* Look up account `id`; true and *balance when it exists. */
static bool load_balance(uint32_t index_id, uint32_t id, int64_t *balance) {
    uint32_t iter = 0;
    if (datastore_index_scan_point_bsatn(index_id, (const uint8_t *)&id, 4, &iter)) STDB_PANIC("accounts scan failed");
    bool found = false;
    for (;;) {
        uint32_t n = sizeof scan_buf;
        int16_t rc = row_iter_bsatn_advance(iter, scan_buf, &n);
        if (rc > 0) STDB_PANIC("row_iter_bsatn_advance failed");
        if (n >= ROW_SIZE) {
            __builtin_memcpy(balance, scan_buf + 4, 8);
            found = true;
        }
        if (rc == STDB_EXHAUSTED) return found;
    }
}

static void store_balance(uint32_t table_id, uint32_t index_id, uint32_t id, int64_t balance) {
    uint8_t row[ROW_SIZE];
    uint32_t len = ROW_SIZE;
    __builtin_memcpy(row, &id, 4);
    __builtin_memcpy(row + 4, &balance, 8);
    if (datastore_update_bsatn(table_id, index_id, row, &len)) STDB_PANIC("accounts update failed");
}

/* seed(n: u32, initial_balance: i64): delete every account, then insert ids 0..n-1. */
static int32_t seed(stdb_ctx *ctx, bsatn_reader *args) {
    uint32_t n = r_u32(args);
    int64_t initial = r_i64(args);
    if (args->err) return stdb_fail(ctx, "failed to decode reducer arguments");
    uint32_t table_id = TABLE_ID("accounts");
    static const uint8_t unbounded = 2; /* Bound::Unbounded */
    uint32_t deleted = 0;
    if (datastore_delete_by_index_scan_range_bsatn(INDEX_ID(PK_INDEX), &unbounded, 0, 0, &unbounded, 1, &unbounded, 1,
                                                   &deleted))
        STDB_PANIC("accounts delete failed");
    uint8_t row[ROW_SIZE];
    __builtin_memcpy(row + 4, &initial, 8);
    for (uint32_t id = 0; id < n; id++) {
        uint32_t len = ROW_SIZE;
        __builtin_memcpy(row, &id, 4);
        if (datastore_insert_bsatn(table_id, row, &len)) STDB_PANIC("accounts insert failed");
        __builtin_memcpy(row + 4, &initial, 8);
    }
    return 0;
}

/* transfer(from: u32, to: u32, amount: i64). */
static int32_t transfer(stdb_ctx *ctx, bsatn_reader *args) {
    uint32_t from = r_u32(args);
    uint32_t to = r_u32(args);
    int64_t amount = r_i64(args);
    if (args->err) return stdb_fail(ctx, "failed to decode reducer arguments");
    if (from == to) return stdb_fail(ctx, "same_account");
    if (amount <= 0) return stdb_fail(ctx, "non_positive_amount");
    uint32_t index_id = INDEX_ID(PK_INDEX);
    int64_t from_balance, to_balance;
    if (!load_balance(index_id, from, &from_balance) || !load_balance(index_id, to, &to_balance))
        return stdb_fail(ctx, "account_missing");
    if (from_balance < amount) return stdb_fail(ctx, "insufficient_funds");
    uint32_t table_id = TABLE_ID("accounts");
    store_balance(table_id, index_id, from, from_balance - amount);
    store_balance(table_id, index_id, to, (int64_t)((uint64_t)to_balance + (uint64_t)amount));
    return 0;
}

static void params_seed(bsatn_buf *b) {
    params_begin(b, 2);
    ty_elem(b, "n"); ty_prim(b, TY_U32);
    ty_elem(b, "initial_balance"); ty_prim(b, TY_I64);
}
static void params_transfer(bsatn_buf *b) {
    params_begin(b, 3);
    ty_elem(b, "from"); ty_prim(b, TY_U32);
    ty_elem(b, "to"); ty_prim(b, TY_U32);
    ty_elem(b, "amount"); ty_prim(b, TY_I64);
}

static const stdb_reducer_def REDUCERS[] = {
    {"seed", STDB_NO_LIFECYCLE, params_seed, seed},
    {"transfer", STDB_NO_LIFECYCLE, params_transfer, transfer},
};

static void describe(md_builder *md) {
    bsatn_buf *ts = &md->typespace;
    uint32_t ref = md_type(md);
    ty_product(ts, 2);
    ty_elem(ts, "id"); ty_prim(ts, TY_U32);
    ty_elem(ts, "balance"); ty_prim(ts, TY_I64);
    md_table *t = md_table_begin(md, "accounts", ref, MD_PUBLIC);
    md_pk_unique_btree(t, 0, "id");
    md_table_end(t);
    md_typedef(md, "Accounts", ref);
}

STDB_MODULE(REDUCERS, describe)
