/*
 * A C program using segpool through include/segpool.h, linked against libsegpool_capi.a.
 * Built and run by capi/tests/c_smoke.rs; prints "smoke: N checks passed" and exits 0, or
 * prints what failed (with the library's last error) and exits 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segpool.h"

static int checks = 0;

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, " (last error: %s)\n", segpool_last_error_message());     \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* Runs a call and checks its status; on a mismatch names both statuses and the message. */
#define EXPECT(expected, call)                                                        \
    do {                                                                              \
        SegpoolStatus got_ = (call);                                                  \
        CHECK(got_ == (expected), "%s returned %s, expected %s", #call,               \
              segpool_status_name(got_), segpool_status_name(expected));              \
    } while (0)

/* The last error must mention `needle` after a failed call. */
#define EXPECT_MESSAGE(needle)                                                        \
    CHECK(strstr(segpool_last_error_message(), (needle)) != NULL,                     \
          "last error does not mention \"%s\"", (needle))

static int stats_equal(const SegpoolStats *a, const SegpoolStats *b) {
    return memcmp(a, b, sizeof *a) == 0;
}

static void fill(uint8_t *p, size_t len, uint8_t seed) {
    for (size_t i = 0; i < len; i++) p[i] = (uint8_t)(seed + i * 31);
}

static int intact(const uint8_t *p, size_t len, uint8_t seed) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != (uint8_t)(seed + i * 31)) return 0;
    return 1;
}

static SegpoolStats take_stats(SegpoolPool pool) {
    SegpoolStats s;
    memset(&s, 0, sizeof s);
    EXPECT(SEGPOOL_STATUS_OK, segpool_stats(pool, &s, NULL, 0));
    return s;
}

static void config_checks(void) {
    SegpoolPool pool = 99;
    SegpoolConfig cfg;
    memset(&cfg, 0, sizeof cfg);

    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_pool_create(NULL, &pool));
    CHECK(pool == 0, "pool_out is cleared on failure, got %llu", (unsigned long long)pool);
    EXPECT_MESSAGE("config");
    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_pool_create(&cfg, NULL));
    EXPECT_MESSAGE("pool_out");

    /* A bogus count with a NULL array, and a huge count: refused before the array is read. */
    cfg.size_class_count = 3;
    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_pool_create(&cfg, &pool));
    EXPECT_MESSAGE("size_classes");
    cfg.size_class_count = (size_t)-1;
    EXPECT(SEGPOOL_STATUS_INVALID_CONFIG, segpool_pool_create(&cfg, &pool));
    EXPECT_MESSAGE("size_class_count");
    static const size_t one[1] = {4096};
    cfg.size_classes = one;
    cfg.size_class_count = 1u << 20;
    EXPECT(SEGPOOL_STATUS_INVALID_CONFIG, segpool_pool_create(&cfg, &pool));

    /* Values the Rust builder refuses, named in the message. */
    static const size_t not_pow2[2] = {4096, 12288};
    cfg.size_classes = not_pow2;
    cfg.size_class_count = 2;
    EXPECT(SEGPOOL_STATUS_INVALID_CONFIG, segpool_pool_create(&cfg, &pool));
    static const size_t ok_classes[2] = {4096, 65536};
    cfg.size_classes = ok_classes;
    cfg.region_size = 12345;
    EXPECT(SEGPOOL_STATUS_INVALID_CONFIG, segpool_pool_create(&cfg, &pool));
    EXPECT_MESSAGE("region_size");
    cfg.region_size = 0;
    cfg.budget = 1;
    EXPECT(SEGPOOL_STATUS_INVALID_CONFIG, segpool_pool_create(&cfg, &pool));
    EXPECT_MESSAGE("budget");
    cfg.budget = 0;
    cfg.flags = 0x80;
    EXPECT(SEGPOOL_STATUS_INVALID_CONFIG, segpool_pool_create(&cfg, &pool));
    EXPECT_MESSAGE("flags");
    CHECK(pool == 0, "no pool handle after a refused config");

    /* A zeroed config is the default pool. */
    memset(&cfg, 0, sizeof cfg);
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_create(&cfg, &pool));
    CHECK(strcmp(segpool_last_error_message(), "") == 0, "success clears the last error");
    SegpoolStats s = take_stats(pool);
    CHECK(s.class_count == 15, "default pool has 15 classes, got %zu", s.class_count);
    CHECK(s.budget_bytes == 0, "no budget");
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_free(pool));
}

int main(void) {
    config_checks();

    static const size_t classes[3] = {4096, 16384, 65536};
    SegpoolConfig cfg = {classes, 3, 1u << 20, 0, SEGPOOL_FLAG_NO_HUGE_PAGES};
    SegpoolPool pool = 0, other = 0;
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_create(&cfg, &pool));
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_create(&cfg, &other));
    CHECK(pool != 0 && other != 0 && pool != other, "two distinct pool handles");

    /* Allocate, write, read. */
    enum { N = 8 };
    SegpoolSegment seg[N];
    uint8_t *ptr[N];
    size_t len[N];
    for (int i = 0; i < N; i++) {
        size_t size = (i % 2) ? 5000 : 100; /* classes 16 KiB and 4 KiB */
        EXPECT(SEGPOOL_STATUS_OK, segpool_allocate(pool, size, 0, &seg[i]));
        EXPECT(SEGPOOL_STATUS_OK, segpool_segment_ptr(pool, seg[i], &ptr[i]));
        EXPECT(SEGPOOL_STATUS_OK, segpool_segment_len(pool, seg[i], &len[i]));
        CHECK(len[i] == ((i % 2) ? 16384u : 4096u), "segment %d len %zu", i, len[i]);
        CHECK(((uintptr_t)ptr[i] & 4095) == 0, "segment %d is page-aligned", i);
        for (int j = 0; j < i; j++) {
            CHECK(seg[i] != seg[j], "handles are unique");
            CHECK(ptr[i] + len[i] <= ptr[j] || ptr[j] + len[j] <= ptr[i], "segments %d and %d overlap", i, j);
        }
        fill(ptr[i], len[i], (uint8_t)i);
    }
    for (int i = 0; i < N; i++) CHECK(intact(ptr[i], len[i], (uint8_t)i), "segment %d reads back", i);

    /* Stats: totals and per-class entries. */
    SegpoolClassStats cls[8];
    memset(cls, 0xAB, sizeof cls);
    SegpoolStats st;
    EXPECT(SEGPOOL_STATUS_OK, segpool_stats(pool, &st, cls, 8));
    CHECK(st.class_count == 3, "3 classes, got %zu", st.class_count);
    CHECK(st.live_segments == N, "%d live segments, got %zu", N, st.live_segments);
    CHECK(st.in_use_bytes == 4 * 4096 + 4 * 16384, "in_use_bytes %zu", st.in_use_bytes);
    CHECK(cls[0].size == 4096 && cls[0].in_use == 4 && cls[0].allocations == 4, "class 0 counts");
    CHECK(cls[1].size == 16384 && cls[1].in_use == 4, "class 1 counts");
    CHECK(cls[2].size == 65536 && cls[2].in_use == 0, "class 2 counts");
    CHECK(cls[3].size == (size_t)0xABABABABABABABABull, "entries past class_count are untouched");
    SegpoolClassStats one_class;
    EXPECT(SEGPOOL_STATUS_OK, segpool_stats(pool, &st, &one_class, 1));
    CHECK(one_class.size == 4096, "a short array gets the first classes");
    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_stats(pool, NULL, NULL, 0));
    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_stats(pool, &st, NULL, 4));

    /* Usage: the byte counts alone, the same as the stats' on a quiet pool. */
    SegpoolUsage u;
    memset(&u, 0, sizeof u);
    EXPECT(SEGPOOL_STATUS_OK, segpool_usage(pool, &u));
    CHECK(u.in_use_bytes == st.in_use_bytes && u.mapped_bytes == st.mapped_bytes &&
              u.cached_bytes == st.cached_bytes && u.budget_bytes == st.budget_bytes,
          "usage agrees with stats: in use %zu/%zu, mapped %zu/%zu", u.in_use_bytes,
          st.in_use_bytes, u.mapped_bytes, st.mapped_bytes);
    CHECK(u.live_segments == N, "usage: %d live segments, got %zu", N, u.live_segments);
    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_usage(pool, NULL));
    EXPECT_MESSAGE("usage_out");

    /* Release one; its handle is now stale, a second release is refused. */
    SegpoolSegment released = seg[0];
    EXPECT(SEGPOOL_STATUS_OK, segpool_release(pool, released));
    SegpoolStats before = take_stats(pool);
    CHECK(before.live_segments == N - 1, "one fewer live segment");

    EXPECT(SEGPOOL_STATUS_STALE_HANDLE, segpool_release(pool, released));
    EXPECT_MESSAGE("released already");
    uint8_t *p = (uint8_t *)1;
    EXPECT(SEGPOOL_STATUS_STALE_HANDLE, segpool_segment_ptr(pool, released, &p));
    CHECK(p == NULL, "ptr_out is cleared on failure");
    size_t l = 7;
    EXPECT(SEGPOOL_STATUS_STALE_HANDLE, segpool_segment_len(pool, released, &l));
    CHECK(l == 0, "len_out is cleared on failure");

    /* The slot is reused by the next allocation; the old handle still does not reach it. */
    SegpoolSegment reused;
    EXPECT(SEGPOOL_STATUS_OK, segpool_allocate(pool, 100, 0, &reused));
    CHECK(reused != released, "a reused slot gets a new generation");
    CHECK((reused >> 24) == (released >> 24), "same pool and slot (FIFO of one free slot)");
    EXPECT(SEGPOOL_STATUS_STALE_HANDLE, segpool_release(pool, released));
    EXPECT_MESSAGE("another segment");
    seg[0] = reused;
    EXPECT(SEGPOOL_STATUS_OK, segpool_segment_ptr(pool, reused, &ptr[0]));
    fill(ptr[0], len[0], 0);
    before = take_stats(pool);

    /* Null, forged, wrong-kind, wrong-pool handles. */
    EXPECT(SEGPOOL_STATUS_NULL_HANDLE, segpool_release(pool, 0));
    EXPECT(SEGPOOL_STATUS_NULL_HANDLE, segpool_release(0, seg[1]));
    EXPECT(SEGPOOL_STATUS_INVALID_HANDLE, segpool_release(pool, pool));
    EXPECT_MESSAGE("not a segment handle");
    EXPECT(SEGPOOL_STATUS_INVALID_HANDLE, segpool_release(seg[1], seg[1]));
    EXPECT_MESSAGE("not a pool handle");
    EXPECT(SEGPOOL_STATUS_INVALID_HANDLE, segpool_release(pool, seg[1] + 1)); /* generation ahead */
    EXPECT(SEGPOOL_STATUS_INVALID_HANDLE, segpool_release(pool, seg[1] + (1000ull << 24))); /* slot never issued */
    EXPECT(SEGPOOL_STATUS_INVALID_HANDLE, segpool_release(pool | 0x0000FFFFFFFFFFFFull, seg[1])); /* serial never issued */
    EXPECT(SEGPOOL_STATUS_WRONG_POOL, segpool_release(other, seg[1]));
    EXPECT_MESSAGE("belongs to the pool at index");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int known = 0;
        for (int j = 0; j < N; j++) known |= (x == seg[j]);
        if (known) continue;
        SegpoolStatus r = segpool_release(pool, x);
        CHECK(r != SEGPOOL_STATUS_OK, "forged handle %#llx was accepted", (unsigned long long)x);
    }
    SegpoolStats after = take_stats(pool);
    CHECK(stats_equal(&before, &after), "refused calls change no count");
    for (int i = 0; i < N; i++) CHECK(intact(ptr[i], len[i], (uint8_t)i), "segment %d intact after refused calls", i);

    /* Sizes: zero, absurd, above the largest class (a dedicated mapping). */
    SegpoolSegment s = 5;
    EXPECT(SEGPOOL_STATUS_ZERO_SIZE, segpool_allocate(pool, 0, 0, &s));
    CHECK(s == 0, "segment_out is cleared on failure");
    EXPECT(SEGPOOL_STATUS_TOO_LARGE, segpool_allocate(pool, SIZE_MAX, 0, &s));
    SegpoolStatus r = segpool_allocate(pool, SIZE_MAX / 2, 0, &s);
    CHECK(r == SEGPOOL_STATUS_TOO_LARGE || r == SEGPOOL_STATUS_MAP_FAILED, "SIZE_MAX/2: %s", segpool_status_name(r));
    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_allocate(pool, 100, 0, NULL));
    EXPECT(SEGPOOL_STATUS_OK, segpool_allocate(pool, 200000, 0, &s));
    EXPECT(SEGPOOL_STATUS_OK, segpool_segment_len(pool, s, &l));
    CHECK(l >= 200000 && l % 4096 == 0, "dedicated length %zu", l);
    EXPECT(SEGPOOL_STATUS_OK, segpool_release(pool, s));

    /* A budget: a request above it fails at once, with the numbers in the message. */
    SegpoolConfig small = {classes, 3, 0, 256 * 1024, 0};
    SegpoolPool budgeted;
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_create(&small, &budgeted));
    EXPECT(SEGPOOL_STATUS_BUDGET_EXCEEDED, segpool_allocate(budgeted, 1 << 20, 0, &s));
    EXPECT_MESSAGE("262144");
    EXPECT(SEGPOOL_STATUS_BUDGET_EXCEEDED, segpool_allocate(budgeted, 1 << 20, 10, &s));

    /* The last error, copied. */
    char small_buf[8];
    size_t full = segpool_last_error_copy(small_buf, sizeof small_buf);
    CHECK(full == strlen(segpool_last_error_message()), "copy returns the full length");
    CHECK(full >= sizeof small_buf && small_buf[7] == '\0' && strncmp(small_buf, "budget", 6) == 0,
          "a short buffer gets a truncated, terminated copy: \"%s\"", small_buf);
    CHECK(segpool_last_error_copy(NULL, 0) == full, "length alone");
    CHECK(segpool_last_error_copy(NULL, 5) == 0, "NULL buffer with a length writes nothing");
    CHECK(strcmp(segpool_status_name(SEGPOOL_STATUS_WRONG_POOL), "SEGPOOL_STATUS_WRONG_POOL") == 0, "status names");
    CHECK(strcmp(segpool_status_name(-1), "SEGPOOL_STATUS_UNKNOWN") == 0, "unknown status name");

    /* Trim. */
    size_t trimmed;
    EXPECT(SEGPOOL_STATUS_OK, segpool_trim(pool, &trimmed));
    EXPECT(SEGPOOL_STATUS_NULL_POINTER, segpool_trim(pool, NULL));

    /* Freeing a pool: its handle and its segments' handles are refused; the other pool lives. */
    SegpoolSegment in_other;
    EXPECT(SEGPOOL_STATUS_OK, segpool_allocate(other, 4096, 0, &in_other));
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_free(pool));
    EXPECT(SEGPOOL_STATUS_STALE_HANDLE, segpool_pool_free(pool));
    EXPECT(SEGPOOL_STATUS_STALE_HANDLE, segpool_release(pool, seg[1]));
    EXPECT_MESSAGE("freed");
    EXPECT(SEGPOOL_STATUS_STALE_HANDLE, segpool_stats(pool, &st, NULL, 0));
    EXPECT(SEGPOOL_STATUS_WRONG_POOL, segpool_release(other, seg[1]));

    /* A new pool may reuse the freed pool's index: the old segment handles still fail. */
    SegpoolPool again;
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_create(&cfg, &again));
    SegpoolSegment fresh;
    EXPECT(SEGPOOL_STATUS_OK, segpool_allocate(again, 100, 0, &fresh));
    for (int i = 0; i < N; i++) {
        SegpoolStatus got = segpool_release(again, seg[i]);
        CHECK(got != SEGPOOL_STATUS_OK, "segment %d of the freed pool was accepted by a new pool", i);
    }
    EXPECT(SEGPOOL_STATUS_OK, segpool_release(again, fresh));
    EXPECT(SEGPOOL_STATUS_OK, segpool_release(other, in_other));
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_free(again));
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_free(other));
    EXPECT(SEGPOOL_STATUS_OK, segpool_pool_free(budgeted));

    printf("smoke: %d checks passed\n", checks);
    return 0;
}
