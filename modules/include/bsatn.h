/* bsatn.h — memory and BSATN for freestanding C SpacetimeDB modules (no libc).
 *
 * Three pieces, all header-only (`static inline`, one translation unit per module):
 *
 *  - A bump allocator over linear memory, starting at the linker's `__heap_base` and growing
 *    the memory with `memory.grow`. `stdb_alloc` never frees; `stdb_arena_mark` /
 *    `stdb_arena_reset` release everything allocated since a mark (the reducer dispatcher in
 *    spacetime.h resets after every call, so per-call allocations never accumulate).
 *  - `bsatn_buf`, a growable byte buffer and BSATN writer (little-endian, no padding;
 *    see shared/spec/sats-bsatn.md §3). Also doubles as a text builder (`buf_text*`).
 *  - `bsatn_reader`, a bounds-checked BSATN reader over guest memory. Reading past the end or
 *    an invalid bool sets `r->err` and yields zeros; check `r->err` once at the end.
 *
 * Value encodings: bool 1 byte; ints LE; 128-bit as (lo, hi) u64 words; 256-bit as four u64
 * words, least significant first; f32/f64 as IEEE bits; string/bytes/array = u32 count + data;
 * Option<T> = tag 0 + T (some) | tag 1 (none); sum = u8 tag + payload; product = fields
 * concatenated.
 */
#ifndef STDB_BSATN_H
#define STDB_BSATN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- bump allocator */

extern unsigned char __heap_base;
static uint32_t stdb_heap_top; /* 0 until the first allocation */

/* Allocate `size` bytes, 8-byte aligned, growing linear memory as needed (traps on failure). */
static inline void *stdb_alloc(uint32_t size) {
    if (stdb_heap_top == 0) stdb_heap_top = (uint32_t)(uintptr_t)&__heap_base;
    uint32_t p = (stdb_heap_top + 7u) & ~7u;
    uint32_t end = p + size;
    if (end < p) __builtin_trap();
    uint32_t have = (uint32_t)__builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uint32_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) __builtin_trap();
    }
    stdb_heap_top = end;
    return (void *)(uintptr_t)p;
}

/* Current allocation watermark; pass it to stdb_arena_reset to free everything after it. */
static inline uint32_t stdb_arena_mark(void) {
    if (stdb_heap_top == 0) stdb_heap_top = (uint32_t)(uintptr_t)&__heap_base;
    return stdb_heap_top;
}
static inline void stdb_arena_reset(uint32_t mark) { stdb_heap_top = mark; }

static inline uint32_t stdb_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}
/* memcmp would be a libc call; this loop is all the modules need. */
static inline bool stdb_memeq(const void *a, const void *b, uint32_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (uint32_t i = 0; i < n; i++)
        if (x[i] != y[i]) return false;
    return true;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    uint8_t *data;
    uint32_t len;
    uint32_t cap;
} bsatn_buf;

/* A buffer over caller-provided storage (e.g. a static array); grows into the arena if full. */
static inline bsatn_buf buf_fixed(void *storage, uint32_t cap) {
    bsatn_buf b = {(uint8_t *)storage, 0, cap};
    return b;
}
/* A fresh arena-backed buffer. */
static inline bsatn_buf buf_new(uint32_t cap) {
    bsatn_buf b = {(uint8_t *)stdb_alloc(cap ? cap : 16), 0, cap ? cap : 16};
    return b;
}

/* Make room for `n` more bytes and return where they go. */
static inline uint8_t *buf_reserve(bsatn_buf *b, uint32_t n) {
    if (b->len + n > b->cap) {
        uint32_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n) cap *= 2;
        uint8_t *data = (uint8_t *)stdb_alloc(cap);
        if (b->len) __builtin_memcpy(data, b->data, b->len);
        b->data = data;
        b->cap = cap;
    }
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

static inline void w_raw(bsatn_buf *b, const void *p, uint32_t n) {
    if (n) __builtin_memcpy(buf_reserve(b, n), p, n);
}
static inline void w_u8(bsatn_buf *b, uint8_t v) { *buf_reserve(b, 1) = v; }
static inline void w_u16(bsatn_buf *b, uint16_t v) { w_raw(b, &v, 2); } /* wasm is little-endian */
static inline void w_u32(bsatn_buf *b, uint32_t v) { w_raw(b, &v, 4); }
static inline void w_u64(bsatn_buf *b, uint64_t v) { w_raw(b, &v, 8); }
static inline void w_i8(bsatn_buf *b, int8_t v) { w_u8(b, (uint8_t)v); }
static inline void w_i16(bsatn_buf *b, int16_t v) { w_u16(b, (uint16_t)v); }
static inline void w_i32(bsatn_buf *b, int32_t v) { w_u32(b, (uint32_t)v); }
static inline void w_i64(bsatn_buf *b, int64_t v) { w_u64(b, (uint64_t)v); }
/* 128-bit: two u64 words, low first (i128: hi is the sign-carrying word). */
static inline void w_u128(bsatn_buf *b, uint64_t lo, uint64_t hi) { w_u64(b, lo); w_u64(b, hi); }
/* A sign-extended i64 as i128. */
static inline void w_i128_i64(bsatn_buf *b, int64_t v) { w_u128(b, (uint64_t)v, v < 0 ? ~0ull : 0); }
/* 256-bit: four u64 words, least significant first. */
static inline void w_u256(bsatn_buf *b, const uint64_t w[4]) { w_raw(b, w, 32); }
static inline void w_bool(bsatn_buf *b, bool v) { w_u8(b, v ? 1 : 0); }
static inline void w_f32(bsatn_buf *b, float v) { w_raw(b, &v, 4); }
static inline void w_f64(bsatn_buf *b, double v) { w_raw(b, &v, 8); }
/* String / bytes: u32 length + data. */
static inline void w_strn(bsatn_buf *b, const char *s, uint32_t n) { w_u32(b, n); w_raw(b, s, n); }
static inline void w_str(bsatn_buf *b, const char *s) { w_strn(b, s, stdb_strlen(s)); }
static inline void w_bytes(bsatn_buf *b, const void *p, uint32_t n) { w_u32(b, n); w_raw(b, p, n); }
/* Sum tag; Option<T>: w_some(b) then T, or w_none(b). */
static inline void w_tag(bsatn_buf *b, uint8_t tag) { w_u8(b, tag); }
static inline void w_some(bsatn_buf *b) { w_u8(b, 0); }
static inline void w_none(bsatn_buf *b) { w_u8(b, 1); }
/* Option<String> from a nullable C string. */
static inline void w_opt_str(bsatn_buf *b, const char *s) {
    if (s) { w_some(b); w_str(b, s); } else w_none(b);
}
/* Array/Vec: element count, then the elements. */
static inline void w_vec_len(bsatn_buf *b, uint32_t n) { w_u32(b, n); }
/* Overwrite a u32 previously reserved at `at` (for counts known only afterwards). */
static inline void w_patch_u32(bsatn_buf *b, uint32_t at, uint32_t v) { __builtin_memcpy(b->data + at, &v, 4); }

/* ---------------------------------------------------------------- text building (no length prefix) */

static inline void buf_text(bsatn_buf *b, const char *s) { w_raw(b, s, stdb_strlen(s)); }
static inline void buf_textn(bsatn_buf *b, const char *s, uint32_t n) { w_raw(b, s, n); }
static inline void buf_text_u64(bsatn_buf *b, uint64_t v) {
    char tmp[20];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) w_u8(b, (uint8_t)tmp[--n]);
}
static inline void buf_text_i64(bsatn_buf *b, int64_t v) {
    if (v < 0) { w_u8(b, '-'); buf_text_u64(b, (uint64_t)0 - (uint64_t)v); }
    else buf_text_u64(b, (uint64_t)v);
}
/* Lowercase hex of `n` bytes taken from the END first: the text form of a little-endian
 * Identity/ConnectionId (big-endian hex, sats-bsatn.md §4). */
static inline void buf_text_hex_be(bsatn_buf *b, const uint8_t *p, uint32_t n) {
    static const char digits[] = "0123456789abcdef";
    for (uint32_t i = n; i-- > 0;) { w_u8(b, (uint8_t)digits[p[i] >> 4]); w_u8(b, (uint8_t)digits[p[i] & 15]); }
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    const uint8_t *p;
    uint32_t len;
    uint32_t pos;
    int err; /* set on overrun / invalid bool / invalid tag; sticky */
} bsatn_reader;

/* A borrowed (pointer, length) view into the reader's buffer; not NUL-terminated. */
typedef struct {
    const char *ptr;
    uint32_t len;
} stdb_str;

static inline bsatn_reader reader_new(const void *p, uint32_t len) {
    bsatn_reader r = {(const uint8_t *)p, len, 0, 0};
    return r;
}
static inline uint32_t r_remaining(const bsatn_reader *r) { return r->len - r->pos; }
static inline bool r_at_end(const bsatn_reader *r) { return r->pos >= r->len; }

/* Consume `n` bytes; returns a pointer to them, or NULL (and sets err) if too short. */
static inline const uint8_t *r_take(bsatn_reader *r, uint32_t n) {
    if (r->err || r->len - r->pos < n) { r->err = 1; return NULL; }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}
static inline void r_raw(bsatn_reader *r, void *out, uint32_t n) {
    const uint8_t *p = r_take(r, n);
    if (p) __builtin_memcpy(out, p, n); else __builtin_memset(out, 0, n);
}
static inline uint8_t r_u8(bsatn_reader *r) { const uint8_t *p = r_take(r, 1); return p ? *p : 0; }
static inline uint16_t r_u16(bsatn_reader *r) { uint16_t v; r_raw(r, &v, 2); return v; }
static inline uint32_t r_u32(bsatn_reader *r) { uint32_t v; r_raw(r, &v, 4); return v; }
static inline uint64_t r_u64(bsatn_reader *r) { uint64_t v; r_raw(r, &v, 8); return v; }
static inline int8_t r_i8(bsatn_reader *r) { return (int8_t)r_u8(r); }
static inline int16_t r_i16(bsatn_reader *r) { return (int16_t)r_u16(r); }
static inline int32_t r_i32(bsatn_reader *r) { return (int32_t)r_u32(r); }
static inline int64_t r_i64(bsatn_reader *r) { return (int64_t)r_u64(r); }
/* 128-bit into (lo, hi); 256-bit into four words, least significant first. */
static inline void r_u128(bsatn_reader *r, uint64_t *lo, uint64_t *hi) { *lo = r_u64(r); *hi = r_u64(r); }
static inline void r_u256(bsatn_reader *r, uint64_t w[4]) { r_raw(r, w, 32); }
static inline float r_f32(bsatn_reader *r) { float v; r_raw(r, &v, 4); return v; }
static inline double r_f64(bsatn_reader *r) { double v; r_raw(r, &v, 8); return v; }
static inline bool r_bool(bsatn_reader *r) {
    uint8_t v = r_u8(r);
    if (v > 1) r->err = 1;
    return v == 1;
}
/* String or bytes: a view into the buffer (no copy, no UTF-8 check). */
static inline stdb_str r_str(bsatn_reader *r) {
    uint32_t n = r_u32(r);
    const uint8_t *p = r_take(r, n);
    stdb_str s = {p ? (const char *)p : "", p ? n : 0};
    return s;
}
/* Sum tag, checked against the number of variants. */
static inline uint8_t r_tag(bsatn_reader *r, uint8_t n_variants) {
    uint8_t t = r_u8(r);
    if (t >= n_variants) r->err = 1;
    return t;
}
/* Option<T>: returns true for some (then read T), false for none. */
static inline bool r_some(bsatn_reader *r) { return r_tag(r, 2) == 0; }
/* Array/Vec element count. */
static inline uint32_t r_vec_len(bsatn_reader *r) { return r_u32(r); }

static inline bool str_eq(stdb_str s, const char *c) {
    uint32_t n = stdb_strlen(c);
    return s.len == n && stdb_memeq(s.ptr, c, n);
}

#endif /* STDB_BSATN_H */
