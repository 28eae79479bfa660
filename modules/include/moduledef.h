/* moduledef.h — build `bsatn(RawModuleDef::V9)` (shared/spec/module-abi.md §11) in C.
 *
 * Usage, inside the `describe(md_builder *md)` passed to STDB_MODULE (spacetime.h):
 *
 *     uint32_t user_ref = md_type(md);                  // typespace index of the next type
 *     ty_product(&md->typespace, 2);                    //   ...write it (an AlgebraicType)
 *       ty_elem(&md->typespace, "identity"); ty_identity(&md->typespace);
 *       ty_elem(&md->typespace, "online");   ty_prim(&md->typespace, TY_BOOL);
 *     md_typedef(md, "User", user_ref);                 // RawTypeDefV9 {scope [], name, ref, true}
 *
 *     md_table *t = md_table_begin(md, "user", user_ref, MD_PUBLIC);
 *     md_pk_unique_btree(t, 0, "identity");             // #[primary_key] as Rust emits it
 *     md_table_end(t);
 *     md_rls(md, "SELECT * FROM user WHERE user.identity = :sender");
 *
 * Reducers are appended by STDB_MODULE from the module's reducer table (so ids = table order).
 * Section buffers are kept separately and concatenated by md_finish in RawModuleDefV9 field
 * order: typespace, tables, reducers, types, misc_exports, row_level_security.
 */
#ifndef STDB_MODULEDEF_H
#define STDB_MODULEDEF_H

#include "spacetime.h"

/* ---------------------------------------------------------------- AlgebraicType meta-encoding */

enum {
    TY_REF = 0, TY_SUM = 1, TY_PRODUCT = 2, TY_ARRAY = 3, TY_STRING = 4, TY_BOOL = 5,
    TY_I8 = 6, TY_U8 = 7, TY_I16 = 8, TY_U16 = 9, TY_I32 = 10, TY_U32 = 11, TY_I64 = 12, TY_U64 = 13,
    TY_I128 = 14, TY_U128 = 15, TY_I256 = 16, TY_U256 = 17, TY_F32 = 18, TY_F64 = 19,
};

/* A type with no payload: TY_STRING, TY_BOOL, the ints and floats. */
static inline void ty_prim(bsatn_buf *b, uint8_t tag) { w_u8(b, tag); }
static inline void ty_ref(bsatn_buf *b, uint32_t ref) { w_u8(b, TY_REF); w_u32(b, ref); }
/* Product / sum header: follow with n × (ty_elem|ty_variant + a type). */
static inline void ty_product(bsatn_buf *b, uint32_t n) { w_u8(b, TY_PRODUCT); w_u32(b, n); }
static inline void ty_sum(bsatn_buf *b, uint32_t n) { w_u8(b, TY_SUM); w_u32(b, n); }
/* Element / variant name (NULL = unnamed); follow with its type. */
static inline void ty_elem(bsatn_buf *b, const char *name) { w_opt_str(b, name); }
static inline void ty_variant(bsatn_buf *b, const char *name) { w_opt_str(b, name); }
/* Array: follow with the element type. ty_bytes = Array(U8). */
static inline void ty_array(bsatn_buf *b) { w_u8(b, TY_ARRAY); }
static inline void ty_bytes(bsatn_buf *b) { ty_array(b); ty_prim(b, TY_U8); }
static inline void ty_unit(bsatn_buf *b) { ty_product(b, 0); }
/* Option<T>: ty_option_begin(b); <T>; ty_option_end(b). ty_option(b, TAG) for a primitive. */
static inline void ty_option_begin(bsatn_buf *b) { ty_sum(b, 2); ty_variant(b, "some"); }
static inline void ty_option_end(bsatn_buf *b) { ty_variant(b, "none"); ty_unit(b); }
static inline void ty_option(bsatn_buf *b, uint8_t prim) { ty_option_begin(b); ty_prim(b, prim); ty_option_end(b); }
/* The special product newtypes (sats-bsatn.md §4), always inline. */
static inline void ty_newtype(bsatn_buf *b, const char *field, uint8_t prim) { ty_product(b, 1); ty_elem(b, field); ty_prim(b, prim); }
static inline void ty_identity(bsatn_buf *b) { ty_newtype(b, "__identity__", TY_U256); }
static inline void ty_connection_id(bsatn_buf *b) { ty_newtype(b, "__connection_id__", TY_U128); }
static inline void ty_timestamp(bsatn_buf *b) { ty_newtype(b, "__timestamp_micros_since_unix_epoch__", TY_I64); }
static inline void ty_time_duration(bsatn_buf *b) { ty_newtype(b, "__time_duration_micros__", TY_I64); }
/* ScheduleAt = Sum{Interval: TimeDuration, Time: Timestamp}. */
static inline void ty_schedule_at(bsatn_buf *b) {
    ty_sum(b, 2);
    ty_variant(b, "Interval"); ty_time_duration(b);
    ty_variant(b, "Time"); ty_timestamp(b);
}

/* ---------------------------------------------------------------- the builder */

enum { MD_PUBLIC = 0, MD_PRIVATE = 1 };           /* TableAccess */
enum { MD_BTREE = 0, MD_HASH = 1, MD_DIRECT = 2 }; /* RawIndexAlgorithm tags */

typedef struct md_builder md_builder;

typedef struct {
    md_builder *md;
    bsatn_buf head;      /* name, product_type_ref, primary_key */
    bsatn_buf indexes, constraints, sequences, schedule;
    uint32_t n_indexes, n_constraints, n_sequences;
    int pk;              /* -1 = none */
    uint8_t access, has_schedule;
} md_table;

struct md_builder {
    bsatn_buf typespace, tables, reducers, types, misc, rls;
    uint32_t n_typespace, n_tables, n_reducers, n_types, n_misc, n_rls;
    md_table table; /* the table being built (one at a time) */
};

static inline void md_init(md_builder *md) {
    __builtin_memset(md, 0, sizeof *md);
    md->typespace = buf_new(1024);
    md->tables = buf_new(1024);
    md->reducers = buf_new(1024);
    md->types = buf_new(256);
    md->misc = buf_new(16);
    md->rls = buf_new(16);
}

/* Reserve the next typespace slot; write exactly one AlgebraicType into md->typespace next. */
static inline uint32_t md_type(md_builder *md) { return md->n_typespace++; }

/* RawTypeDefV9 {scope: [], name, ty: ref, custom_ordering: true} (as Rust/C# emit). */
static inline void md_typedef(md_builder *md, const char *name, uint32_t ref) {
    w_vec_len(&md->types, 0);
    w_str(&md->types, name);
    w_u32(&md->types, ref);
    w_bool(&md->types, true);
    md->n_types++;
}

/* RawRowLevelSecurityDefV9 {sql}. */
static inline void md_rls(md_builder *md, const char *sql) { w_str(&md->rls, sql); md->n_rls++; }

/* Misc export ColumnDefaultValue {table, col_id, value: bsatn bytes at the column's type}. */
static inline void md_column_default(md_builder *md, const char *table, uint16_t col, const void *value, uint32_t len) {
    w_tag(&md->misc, 0);
    w_str(&md->misc, table);
    w_u16(&md->misc, col);
    w_bytes(&md->misc, value, len);
    md->n_misc++;
}

/* Start a user table over the product at `type_ref`. Finish with md_table_end. */
static inline md_table *md_table_begin(md_builder *md, const char *name, uint32_t type_ref, uint8_t access) {
    md_table *t = &md->table;
    __builtin_memset(t, 0, sizeof *t);
    t->md = md;
    t->head = buf_new(64);
    t->indexes = buf_new(128);
    t->constraints = buf_new(64);
    t->sequences = buf_new(64);
    t->schedule = buf_new(64);
    t->pk = -1;
    t->access = access;
    w_str(&t->head, name);
    w_u32(&t->head, type_ref);
    return t;
}

/* primary_key = [col]. Needs a unique constraint (and index) on exactly that column. */
static inline void md_primary_key(md_table *t, uint16_t col) { t->pk = col; }

static inline void w_col_list(bsatn_buf *b, uint32_t n, const uint16_t *cols) {
    w_u32(b, n);
    for (uint32_t i = 0; i < n; i++) w_u16(b, cols[i]);
}

/* RawIndexDefV9: name (NULL = generated), accessor (NULL = none), algorithm and columns
 * (MD_DIRECT takes exactly one column). */
static inline void md_index(md_table *t, const char *name, const char *accessor, uint8_t algo, uint32_t n,
                            const uint16_t *cols) {
    w_opt_str(&t->indexes, name);
    w_opt_str(&t->indexes, accessor);
    w_tag(&t->indexes, algo);
    if (algo == MD_DIRECT) w_u16(&t->indexes, cols[0]);
    else w_col_list(&t->indexes, n, cols);
    t->n_indexes++;
}

/* RawConstraintDefV9 {name, Unique {columns}}. */
static inline void md_unique(md_table *t, const char *name, uint32_t n, const uint16_t *cols) {
    w_opt_str(&t->constraints, name);
    w_tag(&t->constraints, 0);
    w_col_list(&t->constraints, n, cols);
    t->n_constraints++;
}

/* RawSequenceDefV9 with only an increment (what #[auto_inc] emits). */
static inline void md_sequence(md_table *t, const char *name, uint16_t col, int64_t increment) {
    w_opt_str(&t->sequences, name);
    w_u16(&t->sequences, col);
    w_none(&t->sequences); /* start */
    w_none(&t->sequences); /* min_value */
    w_none(&t->sequences); /* max_value */
    w_i128_i64(&t->sequences, increment);
    t->n_sequences++;
}
/* RawSequenceDefV9 with explicit start/min/max (each used only if its has_ flag is set). */
static inline void md_sequence_full(md_table *t, const char *name, uint16_t col, bool has_start, int64_t start,
                                    bool has_min, int64_t min, bool has_max, int64_t max, int64_t increment) {
    w_opt_str(&t->sequences, name);
    w_u16(&t->sequences, col);
    if (has_start) { w_some(&t->sequences); w_i128_i64(&t->sequences, start); } else w_none(&t->sequences);
    if (has_min) { w_some(&t->sequences); w_i128_i64(&t->sequences, min); } else w_none(&t->sequences);
    if (has_max) { w_some(&t->sequences); w_i128_i64(&t->sequences, max); } else w_none(&t->sequences);
    w_i128_i64(&t->sequences, increment);
    t->n_sequences++;
}

/* RawScheduleDefV9 {name (NULL = generated), reducer_name, scheduled_at_column}. */
static inline void md_schedule(md_table *t, const char *name, const char *reducer, uint16_t at_col) {
    w_opt_str(&t->schedule, name);
    w_str(&t->schedule, reducer);
    w_u16(&t->schedule, at_col);
    t->has_schedule = 1;
}

/* #[primary_key] as the Rust macro emits it: pk + unique constraint + btree index (accessor). */
static inline void md_pk_unique_btree(md_table *t, uint16_t col, const char *accessor) {
    md_primary_key(t, col);
    md_index(t, NULL, accessor, MD_BTREE, 1, &col);
    md_unique(t, NULL, 1, &col);
}
/* #[unique]: unique constraint + btree index. */
static inline void md_unique_btree(md_table *t, uint16_t col, const char *accessor) {
    md_index(t, NULL, accessor, MD_BTREE, 1, &col);
    md_unique(t, NULL, 1, &col);
}

static inline void w_section(bsatn_buf *out, uint32_t n, const bsatn_buf *b) {
    w_u32(out, n);
    w_raw(out, b->data, b->len);
}

/* Append the table to md->tables. */
static inline void md_table_end(md_table *t) {
    md_builder *md = t->md;
    w_raw(&md->tables, t->head.data, t->head.len);
    if (t->pk >= 0) { uint16_t c = (uint16_t)t->pk; w_col_list(&md->tables, 1, &c); }
    else w_col_list(&md->tables, 0, 0);
    w_section(&md->tables, t->n_indexes, &t->indexes);
    w_section(&md->tables, t->n_constraints, &t->constraints);
    w_section(&md->tables, t->n_sequences, &t->sequences);
    if (t->has_schedule) { w_some(&md->tables); w_raw(&md->tables, t->schedule.data, t->schedule.len); }
    else w_none(&md->tables);
    w_tag(&md->tables, 1); /* TableType::User */
    w_tag(&md->tables, t->access);
    md->n_tables++;
}

/* Params helpers: a reducer's params are a ProductType written WITHOUT the AlgebraicType tag
 * (u32 count + elements). Use params_begin(b, n), then n × (ty_elem(b, "name") + a type). */
static inline void params_begin(bsatn_buf *b, uint32_t n) { w_u32(b, n); }

/* RawReducerDefV9 for each entry of the module's reducer table, in order. */
static inline void md_reducers(md_builder *md, const stdb_reducer_def *defs, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        w_str(&md->reducers, defs[i].name);
        if (defs[i].params) defs[i].params(&md->reducers);
        else params_begin(&md->reducers, 0);
        if (defs[i].lifecycle >= 0) { w_some(&md->reducers); w_tag(&md->reducers, (uint8_t)defs[i].lifecycle); }
        else w_none(&md->reducers);
        md->n_reducers++;
    }
}

/* Emit tag 1 (V9) + the six sections to `sink`. */
static inline void md_finish(md_builder *md, uint32_t sink) {
    bsatn_buf out = buf_new(md->typespace.len + md->tables.len + md->reducers.len + md->types.len + md->misc.len +
                            md->rls.len + 32);
    w_tag(&out, 1);
    w_section(&out, md->n_typespace, &md->typespace);
    w_section(&out, md->n_tables, &md->tables);
    w_section(&out, md->n_reducers, &md->reducers);
    w_section(&out, md->n_types, &md->types);
    w_section(&out, md->n_misc, &md->misc);
    w_section(&out, md->n_rls, &md->rls);
    stdb_sink_write(sink, out.data, out.len);
}

#endif /* STDB_MODULEDEF_H */
