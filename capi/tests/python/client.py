"""A Python client of segpool's C ABI through ctypes.

Usage: python3 client.py LIBSEGPOOL_CAPI_SO SEGPOOL_H

Allocates from several threads at once, writes and reads every segment, reads the counts (stats
and usage), and checks the status code of every kind of bad handle (stale, double release,
forged, null, wrong kind, wrong pool, freed pool) and that a refused call changes nothing. The status values are read from the
header, so this client checks the header too. Prints "python: N checks passed" and exits 0, or
raises (exit 1) naming the failed check.
"""

import ctypes
import random
import re
import sys
import threading

if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
    print("usage: python3 client.py LIBSEGPOOL_CAPI_SO SEGPOOL_H", file=sys.stderr)
    print("  e.g. python3 capi/tests/python/client.py target/release/libsegpool_capi.so "
          "capi/include/segpool.h", file=sys.stderr)
    sys.exit(2)
LIB_PATH, HEADER_PATH = sys.argv[1], sys.argv[2]

checks = 0
checks_lock = threading.Lock()


def check(cond, what):
    global checks
    with checks_lock:
        checks += 1
    if not cond:
        raise AssertionError(f"{what} (last error: {last_error()!r})")


# --- The status codes, as the header defines them -------------------------------------------
header = open(HEADER_PATH, encoding="utf-8").read()
S = {
    name: int(value)
    for name, value in re.findall(r"^\s*SEGPOOL_STATUS_([A-Z_]+) = (\d+),", header, re.M)
}
for needed in [
    "OK", "NULL_POINTER", "NULL_HANDLE", "INVALID_HANDLE", "STALE_HANDLE", "WRONG_POOL",
    "ZERO_SIZE", "TOO_LARGE", "BUDGET_EXCEEDED", "INVALID_CONFIG", "MAP_FAILED", "PANIC",
]:
    check(needed in S, f"header defines SEGPOOL_STATUS_{needed}")


# --- The library ---------------------------------------------------------------------------
class Config(ctypes.Structure):
    _fields_ = [
        ("size_classes", ctypes.POINTER(ctypes.c_size_t)),
        ("size_class_count", ctypes.c_size_t),
        ("region_size", ctypes.c_size_t),
        ("budget", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
    ]


STATS_FIELDS = [
    "mapped_bytes", "in_use_bytes", "cached_bytes", "budget_bytes", "peak_in_use_bytes",
    "peak_mapped_bytes", "regions", "regions_mapped", "regions_unmapped", "dedicated_segments",
    "dedicated_bytes", "budget_waiters", "live_segments", "class_count",
]
# The header is the reference: the struct's fields in order, with their types.
stats_body = re.search(r"typedef struct SegpoolStats \{(.*?)\} SegpoolStats;", header, re.S).group(1)
check(
    re.findall(r"^\s*(?:size_t|uint64_t) (\w+);", stats_body, re.M) == STATS_FIELDS,
    "SegpoolStats fields match the header",
)


class Stats(ctypes.Structure):
    _fields_ = [
        (f, ctypes.c_uint64 if f.startswith("regions_") else ctypes.c_size_t) for f in STATS_FIELDS
    ]

    def as_tuple(self):
        return tuple(getattr(self, f) for f in STATS_FIELDS)


USAGE_FIELDS = [
    "mapped_bytes", "in_use_bytes", "cached_bytes", "budget_bytes", "dedicated_segments",
    "dedicated_bytes", "budget_waiters", "live_segments",
]
usage_body = re.search(r"typedef struct SegpoolUsage \{(.*?)\} SegpoolUsage;", header, re.S).group(1)
check(
    re.findall(r"^\s*size_t (\w+);", usage_body, re.M) == USAGE_FIELDS,
    "SegpoolUsage fields match the header",
)


class Usage(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in USAGE_FIELDS]


class ClassStats(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t), ("in_use", ctypes.c_size_t), ("free", ctypes.c_size_t),
        ("cached", ctypes.c_size_t), ("regions", ctypes.c_size_t),
        ("allocations", ctypes.c_uint64), ("releases", ctypes.c_uint64),
    ]


lib = ctypes.CDLL(LIB_PATH)
u64, i32, size_t = ctypes.c_uint64, ctypes.c_int32, ctypes.c_size_t
for name, args in {
    "segpool_pool_create": [ctypes.POINTER(Config), ctypes.POINTER(u64)],
    "segpool_pool_free": [u64],
    "segpool_allocate": [u64, size_t, u64, ctypes.POINTER(u64)],
    "segpool_segment_ptr": [u64, u64, ctypes.POINTER(ctypes.c_void_p)],
    "segpool_segment_len": [u64, u64, ctypes.POINTER(size_t)],
    "segpool_release": [u64, u64],
    "segpool_stats": [u64, ctypes.POINTER(Stats), ctypes.POINTER(ClassStats), size_t],
    "segpool_trim": [u64, ctypes.POINTER(size_t)],
    "segpool_usage": [u64, ctypes.POINTER(Usage)],
}.items():
    f = getattr(lib, name)
    f.argtypes, f.restype = args, i32
lib.segpool_last_error_message.argtypes, lib.segpool_last_error_message.restype = [], ctypes.c_char_p
lib.segpool_last_error_copy.argtypes = [ctypes.c_char_p, size_t]
lib.segpool_last_error_copy.restype = size_t
lib.segpool_status_name.argtypes, lib.segpool_status_name.restype = [i32], ctypes.c_char_p


def last_error():
    return lib.segpool_last_error_message().decode()


def expect(expected, status, what):
    check(
        status == S[expected],
        f"{what}: got {lib.segpool_status_name(status).decode()}, expected SEGPOOL_STATUS_{expected}",
    )


def create_pool(classes=(4096, 16384, 65536), budget=0, flags=0):
    arr = (ctypes.c_size_t * len(classes))(*classes)
    cfg = Config(arr, len(classes), 0, budget, flags)
    out = u64(0)
    expect("OK", lib.segpool_pool_create(ctypes.byref(cfg), ctypes.byref(out)), "create pool")
    return out.value


def allocate(pool, size, timeout_ms=0):
    out = u64(0)
    st = lib.segpool_allocate(pool, size, timeout_ms, ctypes.byref(out))
    return st, out.value


def ptr_len(pool, seg):
    p, n = ctypes.c_void_p(), size_t()
    expect("OK", lib.segpool_segment_ptr(pool, seg, ctypes.byref(p)), "segment_ptr")
    expect("OK", lib.segpool_segment_len(pool, seg, ctypes.byref(n)), "segment_len")
    return p.value, n.value


def stats(pool):
    s = Stats()
    expect("OK", lib.segpool_stats(pool, ctypes.byref(s), None, 0), "stats")
    return s


def pattern(tag, n):
    """n bytes that only segment `tag` should hold."""
    seed = (tag * 2654435761) & 0xFFFFFFFF
    unit = seed.to_bytes(4, "little") + bytes([tag & 0xFF, (tag >> 8) & 0xFF, 0x5A, 0xA5])
    return (unit * (n // len(unit) + 1))[:n]


# --- Several threads at once ------------------------------------------------------------------
pool = create_pool()
live_addrs = {}  # address -> (thread, segment): live segments must never share an address
live_lock = threading.Lock()
errors = []
THREADS, ROUNDS = 8, 150


def worker(t):
    try:
        rng = random.Random(t)
        held = []  # (segment, address, length, tag)
        for i in range(ROUNDS):
            size = rng.choice([1, 100, 4096, 5000, 16384, 40000, 65536, 100000])
            st, seg = allocate(pool, size)
            expect("OK", st, f"thread {t} allocate {size}")
            addr, n = ptr_len(pool, seg)
            check(n >= size and addr % 4096 == 0, f"thread {t}: length {n} for {size}, aligned {addr:#x}")
            with live_lock:
                check(addr not in live_addrs, f"address {addr:#x} handed out twice at once")
                live_addrs[addr] = (t, seg)
            tag = t * 100000 + i
            ctypes.memmove(addr, pattern(tag, n), n)
            held.append((seg, addr, n, tag))
            if len(held) > 6 or rng.random() < 0.4:
                seg, addr, n, tag = held.pop(rng.randrange(len(held)))
                check(ctypes.string_at(addr, n) == pattern(tag, n), f"thread {t}: segment {seg:#x} reads back")
                with live_lock:
                    del live_addrs[addr]
                expect("OK", lib.segpool_release(pool, seg), f"thread {t} release")
                # Stale right away, in this thread, with this thread's own message.
                expect("STALE_HANDLE", lib.segpool_release(pool, seg), f"thread {t} double release")
                check(f"{seg:#018x}" in last_error(), f"thread {t}: the message names handle {seg:#x}")
                p = ctypes.c_void_p(1)
                expect("STALE_HANDLE", lib.segpool_segment_ptr(pool, seg, ctypes.byref(p)), "stale ptr")
                check(p.value is None, "ptr_out cleared on failure")
        for seg, addr, n, tag in held:
            check(ctypes.string_at(addr, n) == pattern(tag, n), f"thread {t}: segment {seg:#x} reads back")
            with live_lock:
                del live_addrs[addr]
            expect("OK", lib.segpool_release(pool, seg), f"thread {t} final release")
    except BaseException as e:  # reported by the main thread
        errors.append((t, e))


threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
for th in threads:
    th.start()
for th in threads:
    th.join()
if errors:
    raise AssertionError(f"worker threads failed: {errors}")
s = stats(pool)
check(s.live_segments == 0, f"every segment released, {s.live_segments} live")
classes = (ClassStats * 3)()
st = Stats()
expect("OK", lib.segpool_stats(pool, ctypes.byref(st), classes, 3), "stats with classes")
check([c.size for c in classes] == [4096, 16384, 65536], "class sizes")
check(all(c.in_use == 0 and c.allocations == c.releases for c in classes), "classes balanced")
check(sum(c.allocations for c in classes) + 0 <= THREADS * ROUNDS, "allocations counted")

# --- Every bad handle, and that it changes nothing ---------------------------------------------
# A fresh pool: `Thread.join()` returns before a worker's OS thread has run its thread-local
# destructors, so the workers may still be giving cached slices back to the first pool.
threaded_pool = pool
pool = create_pool()
other = create_pool()
keep = []
for i in range(4):
    st_, seg = allocate(pool, 5000)
    expect("OK", st_, "allocate kept segment")
    addr, n = ptr_len(pool, seg)
    ctypes.memmove(addr, pattern(900 + i, n), n)
    keep.append((seg, addr, n, 900 + i))
st_, gone = allocate(pool, 100)
expect("OK", lib.segpool_release(pool, gone), "release")
st_, in_other = allocate(other, 100)
expect("OK", st_, "allocate in other pool")
before = stats(pool).as_tuple()
before_other = stats(other).as_tuple()
u = Usage()
expect("OK", lib.segpool_usage(pool, ctypes.byref(u)), "usage")
check(
    (u.in_use_bytes, u.mapped_bytes, u.live_segments)
    == (before[STATS_FIELDS.index("in_use_bytes")], before[STATS_FIELDS.index("mapped_bytes")], 4),
    "usage agrees with stats",
)
expect("NULL_POINTER", lib.segpool_usage(pool, None), "NULL usage_out")
expect("INVALID_HANDLE", lib.segpool_usage(keep[0][0], ctypes.byref(u)), "usage of a segment handle")

expect("STALE_HANDLE", lib.segpool_release(pool, gone), "stale handle")
expect("STALE_HANDLE", lib.segpool_release(pool, gone), "double release, again")
expect("NULL_HANDLE", lib.segpool_release(pool, 0), "null segment handle")
expect("NULL_HANDLE", lib.segpool_release(0, keep[0][0]), "null pool handle")
expect("INVALID_HANDLE", lib.segpool_release(pool, pool), "pool handle as segment")
expect("INVALID_HANDLE", lib.segpool_release(keep[0][0], keep[0][0]), "segment handle as pool")
expect("INVALID_HANDLE", lib.segpool_release(pool, keep[0][0] + 1), "generation never issued")
expect("INVALID_HANDLE", lib.segpool_release(pool, keep[0][0] + (1 << 46)), "slot never issued")
expect("INVALID_HANDLE", lib.segpool_release(pool | ((1 << 48) - 1), keep[0][0]), "pool serial never issued")
expect("WRONG_POOL", lib.segpool_release(other, keep[0][0]), "segment of another pool")
expect("WRONG_POOL", lib.segpool_release(pool, in_other), "segment of another pool, reversed")
n_out = size_t(7)
expect("WRONG_POOL", lib.segpool_segment_len(other, keep[0][0], ctypes.byref(n_out)), "len, wrong pool")
check(n_out.value == 0, "len_out cleared on failure")
expect("NULL_POINTER", lib.segpool_segment_len(pool, keep[0][0], None), "NULL len_out")
expect("NULL_POINTER", lib.segpool_segment_ptr(pool, keep[0][0], None), "NULL ptr_out")
expect("NULL_POINTER", lib.segpool_allocate(pool, 100, 0, None), "NULL segment_out")
expect("NULL_POINTER", lib.segpool_stats(pool, None, None, 0), "NULL stats_out")
expect("NULL_POINTER", lib.segpool_stats(pool, ctypes.byref(Stats()), None, 3), "NULL classes")
expect("NULL_POINTER", lib.segpool_pool_create(None, ctypes.byref(u64())), "NULL config")
expect("ZERO_SIZE", allocate(pool, 0)[0], "zero size")
expect("TOO_LARGE", allocate(pool, 2**64 - 1)[0], "SIZE_MAX")
rng = random.Random(6)
known = {pool, other, in_other} | {k[0] for k in keep}
refused = {}
for _ in range(20000):
    forged = rng.getrandbits(64)
    if forged in known:
        continue
    st_ = lib.segpool_release(pool, forged)
    check(st_ != S["OK"], f"forged handle {forged:#x} accepted")
    refused[st_] = refused.get(st_, 0) + 1
    st_ = lib.segpool_release(forged, keep[0][0])
    check(st_ != S["OK"], f"forged pool handle {forged:#x} accepted")
check(set(refused) <= {S["INVALID_HANDLE"], S["WRONG_POOL"], S["STALE_HANDLE"]}, f"forged: {refused}")
# Handles one bit away from a live one.
for seg, _, _, _ in keep:
    for bit in range(64):
        flipped = seg ^ (1 << bit)
        if flipped in known:
            continue
        check(lib.segpool_release(pool, flipped) != S["OK"], f"bit {bit} flipped of {seg:#x} accepted")

after = stats(pool).as_tuple()
check(after == before, f"refused calls change no count of the pool: {[(f, b, a) for f, b, a in zip(STATS_FIELDS, before, after) if a != b]}")
check(stats(other).as_tuple() == before_other, "refused calls change no count of the other pool")
for seg, addr, n, tag in keep:
    check(ctypes.string_at(addr, n) == pattern(tag, n), f"kept segment {seg:#x} intact")
    expect("OK", lib.segpool_release(pool, seg), "release kept")

# The last error, copied into a short buffer.
expect("WRONG_POOL", lib.segpool_release(other, keep[0][0]), "wrong pool again")
buf = ctypes.create_string_buffer(16)
full = lib.segpool_last_error_copy(buf, 16)
check(full == len(last_error()) and buf.value == last_error().encode()[:15], "last_error_copy truncates")

# A budget: waiting for room, then failing with the numbers.
small = create_pool(classes=(4096, 65536), budget=256 * 1024)
expect("BUDGET_EXCEEDED", allocate(small, 1 << 20, 50)[0], "request above the budget")
check("262144" in last_error(), "the budget is in the message")

# A freed pool refuses its handle and its segments' handles.
st_, last = allocate(pool, 100)
expect("OK", lib.segpool_pool_free(pool), "free pool")
expect("STALE_HANDLE", lib.segpool_pool_free(pool), "free twice")
expect("STALE_HANDLE", lib.segpool_release(pool, last), "segment of a freed pool")
expect("STALE_HANDLE", allocate(pool, 100)[0], "allocate from a freed pool")
expect("OK", lib.segpool_release(other, in_other), "release in other")
expect("OK", lib.segpool_pool_free(other), "free other")
expect("OK", lib.segpool_pool_free(small), "free small")
expect("OK", lib.segpool_pool_free(threaded_pool), "free the threaded pool")

print(f"python: {checks} checks passed")
