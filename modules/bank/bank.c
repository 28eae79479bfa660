/* bank — the fault tests' module: accounts, and a ledger row per transfer so a checker can tell
 * exactly which transfers committed (tests/cluster/test_bank.py).
 *
 * transfer(id, from, to, amount) moves `amount` and records `{id, from, to, amount}` in `ledger`
 * in the same transaction; an id already in the ledger fails ("duplicate_transfer"), so a
 * transfer can never apply twice. Σ balances never changes.
 */
#define STDB_LOG_TARGET "bank"
#include "moduledef.h"

#define ACCOUNT_SIZE 12 /* id u32 + balance i64 */
#define LEDGER_SIZE 24  /* id u64 + from u32 + to u32 + amount i64 */
#define ACCOUNTS_PK "accounts_id_idx_btree"
#define LEDGER_PK "ledger_id_idx_btree"

static uint8_t scan_buf[256];

/* Whether the pk scan of `index_id` for `key` finds a row; copies the first row to scan_buf. */
static bool find(uint32_t index_id, const void *key, uint32_t key_len, uint32_t row_size) {
    uint32_t iter = 0;
    if (datastore_index_scan_point_bsatn(index_id, (const uint8_t *)key, key_len, &iter)) STDB_PANIC("scan failed");
    bool found = false;
    for (;;) {
        uint32_t n = sizeof scan_buf;
        int16_t rc = row_iter_bsatn_advance(iter, scan_buf, &n);
        if (rc > 0) STDB_PANIC("row_iter_bsatn_advance failed");
        if (n >= row_size) found = true;
        if (rc == STDB_EXHAUSTED) return found;
    }
}

static bool load_balance(uint32_t id, int64_t *balance) {
    if (!find(INDEX_ID(ACCOUNTS_PK), &id, 4, ACCOUNT_SIZE)) return false;
    __builtin_memcpy(balance, scan_buf + 4, 8);
    return true;
}

static void store_balance(uint32_t id, int64_t balance) {
    uint8_t row[ACCOUNT_SIZE];
    uint32_t len = ACCOUNT_SIZE;
    __builtin_memcpy(row, &id, 4);
    __builtin_memcpy(row + 4, &balance, 8);
    if (datastore_update_bsatn(TABLE_ID("accounts"), INDEX_ID(ACCOUNTS_PK), row, &len)) STDB_PANIC("accounts update failed");
}

/* seed(n: u32, initial_balance: i64): accounts 0..n-1 (only when there are none yet). */
static int32_t seed(stdb_ctx *ctx, bsatn_reader *args) {
    uint32_t n = r_u32(args);
    int64_t initial = r_i64(args);
    if (args->err) return stdb_fail(ctx, "failed to decode reducer arguments");
    uint64_t count = 0;
    if (datastore_table_row_count(TABLE_ID("accounts"), &count)) STDB_PANIC("row count failed");
    if (count) return stdb_fail(ctx, "already_seeded");
    uint8_t row[ACCOUNT_SIZE];
    for (uint32_t id = 0; id < n; id++) {
        uint32_t len = ACCOUNT_SIZE;
        __builtin_memcpy(row, &id, 4);
        __builtin_memcpy(row + 4, &initial, 8);
        if (datastore_insert_bsatn(TABLE_ID("accounts"), row, &len)) STDB_PANIC("accounts insert failed");
    }
    return 0;
}

/* transfer(id: u64, from: u32, to: u32, amount: i64). */
static int32_t transfer(stdb_ctx *ctx, bsatn_reader *args) {
    uint64_t id = r_u64(args);
    uint32_t from = r_u32(args);
    uint32_t to = r_u32(args);
    int64_t amount = r_i64(args);
    if (args->err) return stdb_fail(ctx, "failed to decode reducer arguments");
    if (from == to) return stdb_fail(ctx, "same_account");
    if (amount <= 0) return stdb_fail(ctx, "non_positive_amount");
    if (find(INDEX_ID(LEDGER_PK), &id, 8, LEDGER_SIZE)) return stdb_fail(ctx, "duplicate_transfer");
    int64_t from_balance, to_balance;
    if (!load_balance(from, &from_balance) || !load_balance(to, &to_balance)) return stdb_fail(ctx, "account_missing");
    if (from_balance < amount) return stdb_fail(ctx, "insufficient_funds");
    store_balance(from, from_balance - amount);
    store_balance(to, to_balance + amount);
    uint8_t row[LEDGER_SIZE];
    uint32_t len = LEDGER_SIZE;
    __builtin_memcpy(row, &id, 8);
    __builtin_memcpy(row + 8, &from, 4);
    __builtin_memcpy(row + 12, &to, 4);
    __builtin_memcpy(row + 16, &amount, 8);
    if (datastore_insert_bsatn(TABLE_ID("ledger"), row, &len)) STDB_PANIC("ledger insert failed");
    return 0;
}

static void params_seed(bsatn_buf *b) {
    params_begin(b, 2);
    ty_elem(b, "n"); ty_prim(b, TY_U32);
    ty_elem(b, "initial_balance"); ty_prim(b, TY_I64);
}
static void params_transfer(bsatn_buf *b) {
    params_begin(b, 4);
    ty_elem(b, "id"); ty_prim(b, TY_U64);
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
    uint32_t accounts = md_type(md);
    ty_product(ts, 2);
    ty_elem(ts, "id"); ty_prim(ts, TY_U32);
    ty_elem(ts, "balance"); ty_prim(ts, TY_I64);
    md_table *t = md_table_begin(md, "accounts", accounts, MD_PUBLIC);
    md_pk_unique_btree(t, 0, "id");
    md_table_end(t);
    md_typedef(md, "Accounts", accounts);

    uint32_t ledger = md_type(md);
    ty_product(ts, 4);
    ty_elem(ts, "id"); ty_prim(ts, TY_U64);
    ty_elem(ts, "from"); ty_prim(ts, TY_U32);
    ty_elem(ts, "to"); ty_prim(ts, TY_U32);
    ty_elem(ts, "amount"); ty_prim(ts, TY_I64);
    t = md_table_begin(md, "ledger", ledger, MD_PUBLIC);
    md_pk_unique_btree(t, 0, "id");
    md_table_end(t);
    md_typedef(md, "Ledger", ledger);
}

STDB_MODULE(REDUCERS, describe)
