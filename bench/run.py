#!/usr/bin/env python3
"""Benchmark harness for prezero.

Runs every workload under every allocator (glibc without preload, then
jemalloc, tcmalloc_minimal, mimalloc and prezero through LD_PRELOAD),
several times, interleaving the allocators within each repetition, and
prints per-workload tables plus a summary.  Standard library only (--plot
also needs matplotlib).

    python3 bench/run.py --builddir build [--quick] [--reps N]
                         [--only name,...] [--allocators name,...]
                         [--prezero PATH] [--markdown out.md]
                         [--raw runs.jsonl] [--plot first-touch.png]

--only also takes group names (GROUPS below: randrep, real-heap,
real-programs).

--plot needs matplotlib (Debian: apt-get install python3-matplotlib, then
run with /usr/bin/python3); it is imported only when asked for.

See bench/README.md for what the workloads model and how to read the
output.
"""

import argparse
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = ["glibc", "jemalloc", "tcmalloc", "mimalloc"]
PEER_LIBS = {
    "glibc": None,  # baseline: no preload
    "jemalloc": LIBDIR + "/libjemalloc.so.2",
    "tcmalloc": LIBDIR + "/libtcmalloc_minimal.so.4",
    "mimalloc": LIBDIR + "/libmimalloc.so.2",
}
ALL_ALLOCATORS = PEERS + ["prezero"]
BASELINE = "prezero-base"  # --baseline: another libprezero.so, side by side

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


# ---------------------------------------------------------------------------
# workload definitions
# ---------------------------------------------------------------------------

class Case:
    """One program invocation measured under each allocator.

    metric is "time" (process wall time is the result), "ns_per_round"
    (the program's own per-round median is the result; first-touch),
    "phases" (the largepages3 phases, PHASES below, each a result) or
    "create_us" (vm-create: the guest calloc + touch time is the result).

    env maps an allocator name to extra environment variables for that
    allocator's runs of this case only, e.g. {"prezero":
    {"PREZERO_POOL_MIN": "2G"}}; they override the caller's environment.

    The real programs (REAL_PROGRAMS) use a few more: exe may be an absolute
    path (a system program rather than one in BUILDDIR/bench); "{tmp}" and
    "{real}" in args stand for the harness's temporary directory and
    bench/real; time_field names an ok-line field in microseconds that is
    the result instead of the process wall time, rss_field one in KiB that
    is the peak RSS instead of the process's (redis: the server's numbers,
    not the driver's); preload="driver" starts the program without
    LD_PRELOAD and passes the library in $PZ_BENCH_PRELOAD instead, for a
    driver that preloads only the process it measures; rates lists
    (column header, ok-line field, divisor) of throughputs to show as extra
    columns (medians); expect is the checksum every run must print.
    """

    def __init__(self, workload, label, exe, args, metric="time",
                 allocators=None, info=None, env=None, time_field=None,
                 rss_field=None, preload="env", rates=None, expect=None):
        self.workload = workload
        self.label = label
        self.exe = exe
        self.args = args
        self.metric = metric
        self.allocators = allocators  # None: all
        self.info = info or {}
        self.env = env or {}
        self.time_field = time_field
        self.rss_field = rss_field
        self.preload = preload
        self.rates = rates or []
        self.expect = expect

    def env_for(self, alloc):
        # a --baseline build runs as prezero does
        return self.env.get("prezero" if alloc == BASELINE else alloc, {})

    def env_text(self):
        return "; ".join("%s: %s" % (a, " ".join("%s=%s" % kv for kv in
                                                  sorted(e.items())))
                         for a, e in sorted(self.env.items()) if e)


def size_label(n):
    for unit, div in (("G", GIB), ("M", MIB), ("K", KIB)):
        if n >= div and n % div == 0:
            return "%d%s" % (n // div, unit)
    return str(n)


# Regular workloads: name -> (executable, default args, --quick args).
# Default sizes aim at roughly 0.3-2 s per run under glibc on 2 cores.
SIMPLE = [
    ("churn", "bench-churn",
     ["ops=20000000"], ["ops=8000000"]),
    ("xthread", "bench-xthread",
     ["threads=2", "items=4000000"], ["threads=2", "items=1600000"]),
    ("larson", "bench-larson",
     ["threads=4", "rounds=100000", "generations=50"],
     ["threads=4", "rounds=60000", "generations=30"]),
    ("xmalloc", "bench-xmalloc",
     ["alloc=4", "free=4", "batches=15000"],
     ["alloc=4", "free=4", "batches=8000"]),
    ("mstress", "bench-mstress",
     ["threads=4", "phases=10", "iters=250000"],
     ["threads=4", "phases=6", "iters=150000"]),
    ("cache-scratch", "bench-cache-scratch",
     ["threads=2", "iters=2000", "reps=60000"],
     ["threads=2", "iters=1000", "reps=60000"]),
    ("cache-thrash", "bench-cache-thrash",
     ["threads=2", "iters=2000", "reps=60000"],
     ["threads=2", "iters=1000", "reps=60000"]),
    ("realloc-growth", "bench-realloc-growth",
     ["nbuf=96", "nbig=2", "bigmax=64M"],
     ["nbuf=64", "nbig=2", "bigmax=32M"]),
    ("large-loop", "bench-large-loop",
     ["size=32M", "iters=60"], ["size=32M", "iters=25"]),
    ("recycle-sparse", "bench-recycle-sparse",
     ["size=1G", "rounds=40", "permille=10"], ["size=512M", "rounds=30", "permille=10"]),
    ("cxx-containers", "bench-cxx-containers",
     ["n=20000", "rounds=20"], ["n=20000", "rounds=10"]),
]

# Small objects at real heap sizes (the cache issue): the workloads above
# keep a few hundred KiB to a few MiB live, which the caches hold.  randrep
# replaces random blocks of 8..1024 B in a heap of 4, 16 and 64 MiB, with
# one thread or two (each its own slots, the heap split between them);
# larson-lk is Larson & Krishnan's own setting (2 threads, 8..1000 B, 5000
# blocks per thread, 100 x 5000 replacements per thread before it hands its
# array to a new one, only the head of each block written); mstress-2t-*
# are mstress with 2 threads doing equal work, so about half the frees are
# of the other thread's blocks (the ok line's xfree=), at 16 and 64 MiB live.
REAL_HEAP = []
for _ws in (4, 16, 64):
    for _t in (1, 2):
        REAL_HEAP.append(("randrep-%dm-%dt" % (_ws, _t), "bench-randrep",
                          ["ws=%dM" % _ws, "threads=%d" % _t, "iters=30000000"],
                          ["ws=%dM" % _ws, "threads=%d" % _t, "iters=10000000"]))
REAL_HEAP += [
    ("larson-lk", "bench-larson",
     ["threads=2", "slots=5000", "min=8", "max=1000", "rounds=500000",
      "generations=100", "touch=head"],
     ["threads=2", "slots=5000", "min=8", "max=1000", "rounds=500000",
      "generations=40", "touch=head"]),
    ("mstress-2t-16m", "bench-mstress",
     ["threads=2", "work=equal", "slots=52000", "phases=10", "iters=400000"],
     ["threads=2", "work=equal", "slots=52000", "phases=6", "iters=250000"]),
    ("mstress-2t-64m", "bench-mstress",
     ["threads=2", "work=equal", "slots=208000", "phases=5", "iters=1000000"],
     ["threads=2", "work=equal", "slots=208000", "phases=3", "iters=700000"]),
]
SIMPLE += REAL_HEAP

# Real programs (the real-programs issue): Debian's redis-server, sqlite3,
# python3 and g++ run under each allocator, each run a few seconds, their
# output checked.  name -> (exe, default args, --quick args, Case options).
# The files they run are in bench/real/ (see bench/README.md).
REAL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "real")
SYS_PYTHON = "/usr/bin/python3"  # Debian's, not a pyenv shim
REAL_PROGRAMS = [
    # redis-server under the allocator, driven by redis-benchmark (never
    # preloaded) over a unix socket: SET, GET, LPUSH of 32-byte values,
    # pipelined by 16, two passes; the result is requests / best rate
    # summed over the tests.
    ("redis", SYS_PYTHON,
     ["{real}/redis_bench.py", "requests=500000", "passes=2", "pipeline=16",
      "clients=50", "size=32", "keys=100000"],
     ["{real}/redis_bench.py", "requests=200000", "passes=2", "pipeline=16",
      "clients=50", "size=32", "keys=100000"],
     dict(preload="driver", time_field="bench_us", rss_field="hwm_kib",
          rates=[("SET kreq/s", "set_rps", 1e3), ("GET kreq/s", "get_rps", 1e3),
                 ("LPUSH kreq/s", "lpush_rps", 1e3)])),
    # sqlite3 CLI on an in-memory database: 300k + 60k rows, indexes,
    # joins, GROUP BYs, a window function, updates, deletes.
    ("sqlite", "/usr/bin/sqlite3",
     ["-batch", "-bail", ":memory:", ".read {real}/sqlite.sql"],
     ["-batch", "-bail", ":memory:", ".read {real}/sqlite.sql"],
     dict(expect="28c5db485f4ac823")),
    # Debian's python3 on an allocation-heavy script (dicts, lists,
    # strings, small objects, json); argument: rounds.
    ("python3", SYS_PYTHON, ["{real}/pyalloc.py", "2"],
     ["{real}/pyalloc.py", "1"],
     dict(expect="e6300f93b389ce22")),
    # g++ -O2 on a template-heavy C++17 unit (std::regex, containers,
    # variant, streams); every process of the driver (cc1plus, as) runs
    # under the allocator.  The ok line is the object file's sha256.
    ("g++", "/bin/sh",
     ["-c", '/usr/bin/g++ -std=c++17 -O2 -c "$0" -o "$1/cu.o" && '
      'echo "ok $(sha256sum <"$1/cu.o" | cut -c1-16)"',
      "{real}/compile-unit.cpp", "{tmp}"],
     ["-c", '/usr/bin/g++ -std=c++17 -O2 -c "$0" -o "$1/cu.o" && '
      'echo "ok $(sha256sum <"$1/cu.o" | cut -c1-16)"',
      "{real}/../cxx-containers.cpp", "{tmp}"],
     {}),
]

# The note under each real program's table (what time and peak RSS mean).
REAL_NOTES = {
    "redis": "time = requests / rate summed over SET, GET and LPUSH "
             "(redis-benchmark's rates, the better of 2 passes; lower is "
             "better), peak RSS = the "
             "server's VmHWM before shutdown, cpu = server + redis-benchmark "
             "+ driver; the kreq/s columns are median (min-max) rates; "
             "Debian's redis-server is linked with libjemalloc, so the glibc "
             "row (no preload) runs jemalloc too",
    "sqlite": "time and peak RSS of the sqlite3 process",
    "python3": "time and peak RSS of /usr/bin/python3",
    "g++": "time of the whole g++ driver (cc1plus, as), peak RSS = the "
           "largest of its processes (cc1plus), cpu = all of them",
}

# --only also takes these group names.
GROUPS = {
    "randrep": [w[0] for w in REAL_HEAP if w[0].startswith("randrep-")],
    "real-heap": [w[0] for w in REAL_HEAP],
    "real-programs": [w[0] for w in REAL_PROGRAMS],
}

# Workloads reported on their own, not in the small-object geometric means:
# recycle-sparse measures re-zeroing large blocks (the mmap issue's case);
# the real programs each get their own line too.
OUT_OF_GEOMEAN = {"recycle-sparse"} | {w[0] for w in REAL_PROGRAMS}

# first-touch: (size, rounds) for default and quick runs.
FT_SIZES = [(64 * KIB, 2000), (1 * MIB, 500), (16 * MIB, 60),
            (256 * MIB, 6), (1 * GIB, 3)]
FT_SIZES_QUICK = [(64 * KIB, 1000), (1 * MIB, 200), (16 * MIB, 30),
                  (256 * MIB, 4)]
FT_IDLE_MS = 20
FT_IDLE_SIZES = [(16 * MIB, 10), (256 * MIB, 6)]
FT_IDLE_SIZES_QUICK = [(16 * MIB, 8)]

# largepages (largepages3): block size, default and quick.
LP_SIZE = 1 * GIB
LP_SIZE_QUICK = 512 * MIB
# (ok-line field, phase name as the program prints it)
PHASES = [("first_us", "memset page fault"),
          ("memset2_us", "memset tlb miss"),
          ("memset3_us", "memset second tlb miss"),
          ("stride1_us", "stride touch tlb miss"),
          ("stride2_us", "stride touch second tlb miss")]

# vm-create: guest RAM and start-up phase, default and quick.  prezero gets
# PREZERO_POOL_MIN=<guest>, the documented way a VMM asks for a ready pool.
VM_GUEST, VM_STARTUP_MS = 2 * GIB, 1500
VM_GUEST_QUICK, VM_STARTUP_MS_QUICK = 1 * GIB, 1500
VM_GOAL = 10.0  # prezero's create time should be <= glibc's / VM_GOAL
VM_RAW_THREADS = os.cpu_count() or 2  # the kernel's best: raw populate threads

WORKLOAD_NAMES = ([w[0] for w in SIMPLE] +
                  ["first-touch", "largepages", "vm-create", "vm-create-mmap"] +
                  [w[0] for w in REAL_PROGRAMS])


def build_cases(quick):
    cases = {}
    for name, exe, dflt, qk in SIMPLE:
        args = qk if quick else dflt
        cases[name] = [Case(name, name, exe, list(args))]
    for name, exe, dflt, qk, kw in REAL_PROGRAMS:
        args = qk if quick else dflt
        kw = dict(kw)
        if quick:
            kw.pop("expect", None)  # the known checksums are the default run's
        cases[name] = [Case(name, name, exe, list(args), **kw)]
    ft = []
    sizes = FT_SIZES_QUICK if quick else FT_SIZES
    idle = FT_IDLE_SIZES_QUICK if quick else FT_IDLE_SIZES
    for mode in ("touch", "full"):
        for size, rounds in sizes:
            ft.append(Case("first-touch", "%s %s" % (mode, size_label(size)),
                           "bench-first-touch",
                           ["size=%d" % size, "rounds=%d" % rounds,
                            "mode=" + mode],
                           metric="ns_per_round",
                           info={"size": size, "mode": mode, "idle": 0}))
    for size, rounds in idle:
        ft.append(Case("first-touch", "touch %s idle=%dms"
                       % (size_label(size), FT_IDLE_MS),
                       "bench-first-touch",
                       ["size=%d" % size, "rounds=%d" % rounds, "mode=touch",
                        "idle=%d" % FT_IDLE_MS],
                       metric="ns_per_round",
                       info={"size": size, "mode": "touch", "idle": FT_IDLE_MS}))
    # Warm-memset references: fill=zero (dirty block re-zeroed: reference
    # for touch) and fill=pattern (non-zero byte: reference for full).  The
    # memset does not involve the allocator, but the case runs in the same
    # interleaved loop as the others (once per allocator and repetition) and
    # all runs are pooled, so the reference sees the same machine noise as
    # the measurements it is compared with.
    for fill in ("zero", "pattern"):
        for size, rounds in sizes:
            ft.append(Case("first-touch", "memset-%s %s" % (fill, size_label(size)),
                           "bench-first-touch",
                           ["size=%d" % size, "rounds=%d" % max(rounds, 4),
                            "mode=memset", "fill=" + fill],
                           metric="ns_per_round",
                           info={"size": size, "mode": "memset", "idle": 0,
                                 "fill": fill}))
    cases["first-touch"] = ft

    lp = LP_SIZE_QUICK if quick else LP_SIZE
    cases["largepages"] = [Case("largepages", "largepages %s" % size_label(lp),
                                "bench-largepages", ["size=" + size_label(lp)],
                                metric="phases", info={"size": lp})]
    guest = VM_GUEST_QUICK if quick else VM_GUEST
    startup = VM_STARTUP_MS_QUICK if quick else VM_STARTUP_MS
    cases["vm-create"] = [Case(
        "vm-create", "vm-create %s" % size_label(guest), "bench-vm-create",
        ["guest=" + size_label(guest), "startup_ms=%d" % startup],
        metric="create_us", info={"size": guest, "startup_ms": startup},
        env={"prezero": {"PREZERO_POOL_MIN": size_label(guest)}})]
    # vm-create-mmap: the VMM maps guest RAM with mmap (the mmap issue's
    # case): warm (prezero keeps a pool of the guest's size ready; first
    # touches served by userfaultfd moves, or with PREZERO_UFFD=0 the ready
    # run moved in up front), half-warm (a pool of half the guest), sparse
    # (the guest touches one 2 MiB block in four, scattered; a pool of a
    # quarter of the guest), cold,
    # cold with MAP_POPULATE (prezero populates with helper threads), and the
    # kernel's best on this machine: raw threads calling MADV_POPULATE_WRITE.
    mm = []
    for label, args, env in (
            ("warm", ["mode=mmap"], {"prezero": {"PREZERO_POOL_MIN": size_label(guest)}}),
            ("warm PREZERO_UFFD=0", ["mode=mmap"],
             {"prezero": {"PREZERO_POOL_MIN": size_label(guest), "PREZERO_UFFD": "0"}}),
            ("half-warm", ["mode=mmap"], {"prezero": {"PREZERO_POOL_MIN": size_label(guest // 2)}}),
            ("half-warm PREZERO_UFFD=0", ["mode=mmap"],
             {"prezero": {"PREZERO_POOL_MIN": size_label(guest // 2), "PREZERO_UFFD": "0"}}),
            ("sparse", ["mode=mmap", "touch=4"], {"prezero": {"PREZERO_POOL_MIN": size_label(guest // 4)}}),
            ("sparse PREZERO_UFFD=0", ["mode=mmap", "touch=4"],
             {"prezero": {"PREZERO_POOL_MIN": size_label(guest // 4), "PREZERO_UFFD": "0"}}),
            ("cold", ["mode=mmap"], None),
            ("cold MAP_POPULATE", ["mode=mmap-populate"], None),
            ("raw %d threads" % VM_RAW_THREADS, ["mode=mmap-raw", "threads=%d" % VM_RAW_THREADS], None)):
        mm.append(Case("vm-create-mmap", "vm-create-mmap %s %s" % (label, size_label(guest)),
                       "bench-vm-create",
                       ["guest=" + size_label(guest), "startup_ms=%d" % startup] + args,
                       metric="create_us", info={"size": guest, "startup_ms": startup},
                       env=env))
    cases["vm-create-mmap"] = mm
    return cases


# ---------------------------------------------------------------------------
# running one program
# ---------------------------------------------------------------------------

class Result:
    def __init__(self):
        self.ok = False
        self.error = ""
        self.wall = None      # seconds
        self.cpu = None       # user+sys seconds
        self.rss_kib = None   # peak RSS
        self.checksum = None
        self.fields = {}      # key=value pairs from the "ok" line


def _read(path, limit=4000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _wait_with_timeout(pid, timeout):
    """os.wait4 on pid; kill its process group if it exceeds timeout."""
    expired = []

    def kill():
        expired.append(True)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        while True:
            try:
                _, status, ru = os.wait4(pid, 0)
                break
            except InterruptedError:
                continue
    except BaseException:
        kill()
        try:
            os.wait4(pid, 0)
        except OSError:
            pass
        raise
    finally:
        timer.cancel()
    return status, ru, bool(expired)


def take_fields(case, res):
    """Real programs: the result time and peak RSS from the ok line, if the
    case names them (the process's own are kept in proc_wall/proc_rss_kib);
    a missing field or a wrong checksum fails the run."""
    res.proc_wall, res.proc_rss_kib = res.wall, res.rss_kib
    if not res.ok:
        return
    if case.expect is not None and res.checksum != case.expect:
        res.ok = False
        res.error = "checksum %s, expected %s" % (res.checksum, case.expect)
        return
    for attr, field, scale in (("wall", case.time_field, 1e-6),
                               ("rss_kib", case.rss_field, 1)):
        if not field:
            continue
        try:
            setattr(res, attr, int(res.fields[field]) * scale)
        except (KeyError, ValueError):
            res.ok = False
            res.error = "no %s= in the ok line" % field
            return
    for _, field, _ in case.rates:
        try:
            float(res.fields[field])
        except (KeyError, ValueError):
            res.ok = False
            res.error = "no %s= in the ok line" % field
            return


def run_once(exe, args, preload, env, launcher, timeout, tmpdir):
    res = Result()
    out = os.path.join(tmpdir, "stdout")
    err = os.path.join(tmpdir, "stderr")
    rfile = os.path.join(tmpdir, "rusage")
    for p in (out, err, rfile):
        if os.path.exists(p):
            os.unlink(p)
    wflags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out, wflags, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, err, wflags, 0o644),
    ]
    child_env = dict(env)
    if launcher:
        argv = [launcher, rfile, preload or "-", exe] + list(args)
        path = launcher
    else:
        argv = [exe] + list(args)
        path = exe
        if preload:
            child_env["LD_PRELOAD"] = preload
    t0 = time.perf_counter()
    pid = os.posix_spawn(path, argv, child_env, file_actions=actions,
                         setsid=True)
    status, ru, timed_out = _wait_with_timeout(pid, timeout)
    t1 = time.perf_counter()
    code = os.waitstatus_to_exitcode(status)

    if launcher:
        fields = {}
        for tok in _read(rfile).split():
            k, _, v = tok.partition("=")
            fields[k] = v
        if "wall_ns" in fields:
            res.wall = int(fields["wall_ns"]) / 1e9
            res.cpu = (int(fields["utime_us"]) + int(fields["stime_us"])) / 1e6
            res.rss_kib = int(fields["maxrss_kib"])
            st = fields.get("status", "")
            if st.startswith("signal:"):
                code = -int(st.split(":")[1])
            elif st.startswith("exit:"):
                code = int(st.split(":")[1])
    else:
        res.wall = t1 - t0
        res.cpu = ru.ru_utime + ru.ru_stime
        res.rss_kib = ru.ru_maxrss

    stdout = _read(out)
    stderr = _read(err).strip()
    lines = [l for l in stdout.splitlines() if l.strip()]
    if timed_out:
        res.error = "timeout after %ds" % timeout
    elif code != 0:
        if code < 0:
            try:
                what = "killed by %s" % signal.Signals(-code).name
            except ValueError:
                what = "killed by signal %d" % -code
        else:
            what = "exit %d" % code
        res.error = what + (": " + stderr.splitlines()[-1] if stderr else "")
    elif not lines or not lines[-1].startswith("ok "):
        res.error = "no 'ok' line in output"
    elif res.wall is None:
        res.error = "launcher did not report resource usage"
    else:
        toks = lines[-1].split()
        res.checksum = toks[1] if len(toks) > 1 else ""
        for tok in toks[2:]:
            k, _, v = tok.partition("=")
            res.fields[k] = v
        res.ok = True
    if not res.ok and stderr:
        res.stderr_tail = stderr[-600:]
    return res


# ---------------------------------------------------------------------------
# statistics and formatting
# ---------------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else None


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def fmt_ratio(r):
    return "-" if r is None else "%.2f" % r


def fmt_time(s):
    if s is None:
        return "-"
    return "%.3f" % s


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns >= 1e9:
        return "%.2f s" % (ns / 1e9)
    if ns >= 1e6:
        return "%.2f ms" % (ns / 1e6)
    if ns >= 1e3:
        return "%.1f us" % (ns / 1e3)
    return "%d ns" % ns


def render_text(headers, rows, align=None):
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    align = align or (["<"] + [">"] * (len(headers) - 1))
    def line(cells):
        return "  ".join(("{:%s%d}" % (a, w)).format(c)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def render_md(headers, rows):
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


class Report:
    def __init__(self, md_path):
        self.md_path = md_path
        self.md = []

    def text(self, s=""):
        print(s, flush=True)

    def table(self, title, headers, rows, note=None):
        self.text("\n== %s ==" % title)
        self.text(render_text(headers, rows))
        if note:
            self.text(note)
        self.md.append("#### %s\n" % title)
        self.md.append(render_md(headers, rows))
        if note:
            # markdown: keep the note's line breaks (two trailing spaces)
            self.md.append("\n" + note.replace("\n", "  \n"))
        self.md.append("")

    def md_only(self, s):
        self.md.append(s)

    def write(self):
        if self.md_path:
            with open(self.md_path, "w") as f:
                f.write("\n".join(self.md) + "\n")
            print("\nmarkdown written to %s" % self.md_path)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description="Run the prezero benchmark suite against glibc, "
                    "jemalloc, tcmalloc, mimalloc and prezero.")
    ap.add_argument("--builddir", default="build",
                    help="meson build directory containing bench/ "
                         "(default: build)")
    ap.add_argument("--prezero", default=None,
                    help="path to libprezero.so "
                         "(default: BUILDDIR/src/libprezero.so)")
    ap.add_argument("--baseline", default=None, metavar="SO",
                    help="another libprezero.so (an earlier build) run as "
                         "a sixth allocator, %s, interleaved with the rest "
                         "(A/B of a change)" % BASELINE)
    ap.add_argument("--quick", action="store_true",
                    help="smaller parameters and 3 repetitions")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions per workload and allocator "
                         "(default 5, --quick 3)")
    ap.add_argument("--only", default=None,
                    help="comma-separated workloads (%s) or groups (%s)"
                         % (",".join(WORKLOAD_NAMES), ",".join(GROUPS)))
    ap.add_argument("--allocators", default=None,
                    help="comma-separated subset of %s"
                         % ",".join(ALL_ALLOCATORS))
    ap.add_argument("--markdown", default=None, metavar="FILE",
                    help="also write the tables as markdown to FILE")
    ap.add_argument("--raw", default=None, metavar="FILE",
                    help="also write every run (case, allocator, repetition, "
                         "wall, cpu, peak RSS, ok-line fields) to FILE as "
                         "JSON lines, for ranges and other statistics")
    ap.add_argument("--timeout", type=int, default=180,
                    help="seconds before a single run is killed "
                         "(default 180)")
    ap.add_argument("--plot", default=None, metavar="PNG",
                    help="draw the first-touch results (time per GiB "
                         "against block size) to PNG; needs matplotlib")
    ap.add_argument("--list", action="store_true",
                    help="list workloads and their arguments, then exit")
    opts = ap.parse_args()

    reps = opts.reps if opts.reps is not None else (3 if opts.quick else 5)
    if reps < 1:
        ap.error("--reps must be at least 1")
    all_cases = build_cases(opts.quick)

    if opts.list:
        for name in WORKLOAD_NAMES:
            for c in all_cases[name]:
                print("%-15s %-26s %s %s%s" % (
                    name, c.label, c.exe, " ".join(c.args),
                    ("  [env %s]" % c.env_text()) if c.env_text() else ""))
        return 0

    names = WORKLOAD_NAMES
    if opts.only:
        names = []
        for n in (n.strip() for n in opts.only.split(",")):
            for w in GROUPS.get(n, [n] if n else []):
                if w not in names:
                    names.append(w)
        bad = [n for n in names if n not in all_cases]
        if bad:
            ap.error("unknown workload(s): %s (known: %s; groups: %s)"
                     % (", ".join(bad), ", ".join(WORKLOAD_NAMES),
                        ", ".join(GROUPS)))

    wanted = ALL_ALLOCATORS
    if opts.allocators:
        wanted = [a.strip() for a in opts.allocators.split(",") if a.strip()]
        bad = [a for a in wanted if a not in ALL_ALLOCATORS]
        if bad:
            ap.error("unknown allocator(s): %s" % ", ".join(bad))

    builddir = os.path.abspath(opts.builddir)
    benchdir = os.path.join(builddir, "bench")
    libs = dict(PEER_LIBS)
    libs["prezero"] = os.path.abspath(
        opts.prezero or os.path.join(builddir, "src", "libprezero.so"))

    if opts.baseline:
        libs[BASELINE] = os.path.abspath(opts.baseline)
        wanted = list(wanted) + [BASELINE]
    allocators = []
    for a in wanted:
        lib = libs[a]
        if lib is not None and not os.path.exists(lib):
            print("note: skipping %s: %s not found" % (a, lib))
            continue
        allocators.append(a)
    if not allocators:
        print("error: no allocator available", file=sys.stderr)
        return 2

    launcher = os.path.join(benchdir, "bench-launch")
    if not os.access(launcher, os.X_OK):
        print("note: %s not found; measuring directly (peak RSS then "
              "includes the harness's own RSS)" % launcher)
        launcher = None

    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    pz_env = sorted(k for k in env if k.startswith("PREZERO_"))

    rep = Report(opts.markdown)
    header = [
        "prezero benchmark suite: %s, %d repetition(s)"
        % ("quick" if opts.quick else "default", reps),
        "machine: %s, %d CPUs, kernel %s, python %s"
        % (platform.machine(), os.cpu_count() or 0, platform.release(),
           platform.python_version()),
        "allocators: " + ", ".join(
            "%s (%s)" % (a, libs[a] or "no preload") for a in allocators),
    ]
    if pz_env:
        header.append("environment: " + " ".join(
            "%s=%s" % (k, env[k]) for k in pz_env))
    for h in header:
        rep.text(h)
    rep.md_only("### Benchmark results\n")
    rep.md_only("\n".join("- " + h for h in header) + "\n")

    failures = []
    summary_time = {}  # workload -> {alloc: median time}
    summary_rss = {}
    summary_extra = {}  # label -> {alloc: median seconds}, own metrics
    ft_results = {}    # case label -> {alloc: median ns}
    ft_cases = []
    t_start = time.time()
    raw = open(opts.raw, "w") if opts.raw else None

    with tempfile.TemporaryDirectory(prefix="prezero-bench-") as tmpdir:
        for name in names:
            cases = all_cases[name]
            for case in cases:
                exe = os.path.join(benchdir, case.exe)  # absolute exe: as is
                if not os.access(exe, os.X_OK):
                    print("note: skipping %s: %s not %s" % (
                        case.label, exe, "installed" if os.path.isabs(case.exe)
                        else "built"))
                    continue
                args = [x.replace("{tmp}", tmpdir).replace("{real}", REAL_DIR)
                        for x in case.args]
                allocs = [a for a in allocators
                          if case.allocators is None or a in case.allocators
                          or (a == BASELINE and "prezero" in case.allocators)]
                if not allocs:
                    continue
                runs = {a: [] for a in allocs}
                t_case = time.time()
                sys.stdout.write("running %-28s" % case.label)
                sys.stdout.flush()
                for r in range(reps):
                    # rotate the order so no allocator always runs first
                    order = allocs[r % len(allocs):] + allocs[:r % len(allocs)]
                    for a in order:
                        run_env = env
                        preload = libs[a]
                        if case.env_for(a) or case.preload == "driver":
                            run_env = dict(env)
                            run_env.update(case.env_for(a))
                        if case.preload == "driver":
                            # the driver preloads the process it measures
                            run_env["PZ_BENCH_PRELOAD"] = preload or ""
                            preload = None
                        res = run_once(exe, args, preload, run_env,
                                       launcher, opts.timeout, tmpdir)
                        take_fields(case, res)
                        runs[a].append(res)
                        sys.stdout.write("." if res.ok else "F")
                        sys.stdout.flush()
                sys.stdout.write(" %.0f s\n" % (time.time() - t_case))

                # checksums must agree across allocators and repetitions
                sums = {}
                for a in allocs:
                    for res in runs[a]:
                        if res.ok:
                            sums[res.checksum] = sums.get(res.checksum, 0) + 1
                if len(sums) > 1:
                    ref = None
                    glibc_sums = [x.checksum for x in runs.get("glibc", [])
                                  if x.ok]
                    ref = glibc_sums[0] if glibc_sums else max(sums, key=sums.get)
                    for a in allocs:
                        for res in runs[a]:
                            if res.ok and res.checksum != ref:
                                res.ok = False
                                res.error = ("checksum %s differs from %s"
                                             % (res.checksum, ref))
                if raw:  # after the checksum check, which can fail a run
                    for a in allocs:
                        for r, res in enumerate(runs[a]):
                            raw.write(json.dumps({
                                "workload": name, "case": case.label,
                                "allocator": a, "rep": r, "ok": res.ok,
                                "error": res.error, "wall_s": res.wall,
                                "cpu_s": res.cpu, "rss_kib": res.rss_kib,
                                "proc_wall_s": getattr(res, "proc_wall", None),
                                "proc_rss_kib": getattr(res, "proc_rss_kib", None),
                                "checksum": res.checksum,
                                "fields": res.fields}) + "\n")
                    raw.flush()
                for a in allocs:
                    bad_runs = [x for x in runs[a] if not x.ok]
                    if bad_runs:
                        msg = "%s under %s: %d/%d runs failed: %s" % (
                            case.label, a, len(bad_runs), len(runs[a]),
                            bad_runs[0].error)
                        failures.append(msg)
                        print("FAIL: " + msg)
                        tail = getattr(bad_runs[0], "stderr_tail", "")
                        if tail:
                            print("      stderr: " + tail.replace(
                                "\n", "\n      "))

                if case.metric == "ns_per_round":
                    ft_cases.append(case)
                    ft_results[case.label] = {}
                    if case.info["mode"] == "memset":
                        pooled = [int(x.fields["ns_per_round"])
                                  for a in allocs for x in runs[a] if x.ok]
                        if pooled:
                            ft_results[case.label]["ref"] = median(pooled)
                        continue
                    for a in allocs:
                        good = [x for x in runs[a] if x.ok]
                        if good and len(good) == len(runs[a]):
                            ft_results[case.label][a] = median(
                                [int(x.fields["ns_per_round"]) for x in good])
                    continue

                if case.metric == "phases":
                    t = report_largepages(rep, case, runs, allocs, reps)
                    if t:
                        summary_extra["largepages first touch"] = t
                    continue
                if case.metric == "create_us":
                    t = report_vm_create(rep, case, runs, allocs, reps)
                    if t:
                        summary_extra["vm-create (calloc + touch)" if case.workload == "vm-create"
                                      else case.label] = t
                    continue

                # ---- regular workload table ----
                med = {}
                rows = []
                stats = {}
                ops = {}    # alloc -> operations per run (ok line's ops=)
                xfree = {}  # alloc -> per-mille cross-thread frees per run
                real = name in GROUPS["real-programs"]
                rss_range = {}  # alloc -> (min, max) peak RSS KiB
                rates = {}  # (alloc, field) -> (median, min, max)
                for a in allocs:
                    good = [x for x in runs[a] if x.ok]
                    if not good or len(good) != len(runs[a]):
                        continue
                    walls = [x.wall for x in good]
                    stats[a] = (median(walls), median([x.cpu for x in good]),
                                median([x.rss_kib for x in good]),
                                min(walls), max(walls))
                    med[a] = stats[a][0]
                    rss_range[a] = (min(x.rss_kib for x in good),
                                    max(x.rss_kib for x in good))
                    for _, field, div in case.rates:
                        vals = [float(x.fields[field]) / div for x in good]
                        rates[(a, field)] = (median(vals), min(vals), max(vals))
                    if all("ops" in x.fields for x in good):
                        ops[a] = median([int(x.fields["ops"]) for x in good])
                    if all("xfree" in x.fields for x in good):
                        xfree[a] = [int(x.fields["xfree"]) for x in good]
                peer_t = {a: med[a] for a in PEERS if a in med}
                best_peer = min(peer_t, key=peer_t.get) if peer_t else None
                for a in allocs:
                    if a not in stats:
                        rows.append([a, "FAIL", "", "", "", "", ""])
                        continue
                    t, cpu, rss, lo, hi = stats[a]
                    spread = 100.0 * (hi - lo) / t if t > 0 else 0.0
                    vs_glibc = t / med["glibc"] if "glibc" in med else None
                    vs_best = t / med[best_peer] if best_peer else None
                    rows.append([a + (" *" if a == best_peer else ""),
                                 fmt_time(t), "%.0f%%" % spread,
                                 fmt_time(cpu), "%.1f" % (rss / 1024.0),
                                 fmt_ratio(vs_glibc), fmt_ratio(vs_best)])
                    if ops:
                        # throughput: the program's count over the process wall time
                        rows[-1].append("%.1f" % (ops[a] / t / 1e6)
                                        if a in ops and t > 0 else "-")
                    if real:  # ranges, and the program's own rates
                        rows[-1].append("%.3f-%.3f" % (lo, hi))
                        rows[-1].append("%.1f-%.1f" % (rss_range[a][0] / 1024.0,
                                                       rss_range[a][1] / 1024.0))
                        for _, field, _ in case.rates:
                            m, rlo, rhi = rates[(a, field)]
                            rows[-1].append("%.0f (%.0f-%.0f)" % (m, rlo, rhi))
                if name in OUT_OF_GEOMEAN:  # its own line in "prezero vs best peer"
                    summary_extra[name] = med
                else:
                    summary_time[name] = med
                    summary_rss[name] = {a: stats[a][2] for a in stats}
                headers = ["allocator", "time s", "spread", "cpu s",
                           "peak RSS MiB", "x glibc", "x best peer"]
                note = None
                if best_peer:
                    note = ("median of %d runs; spread = (max-min)/median;"
                            " * = best peer (%s)" % (reps, best_peer))
                if ops:
                    headers.append("Mops/s")
                    note = (note + "; " if note else "") + (
                        "Mops/s = operations (the program's ops=) / median "
                        "wall time")
                if real:
                    headers += ["time min-max", "RSS min-max"]
                    headers += [h for h, _, _ in case.rates]
                    note = (note + "; " if note else "") + (
                        "real program: %s" % REAL_NOTES.get(name, ""))
                if xfree:
                    xs = [v for a in allocs for v in xfree.get(a, [])]
                    note = (note + "; " if note else "") + (
                        "frees of another thread's block: %.1f-%.1f%% "
                        "(all runs)" % (min(xs) / 10.0, max(xs) / 10.0))
                for row in rows:  # FAIL rows
                    row.extend([""] * (len(headers) - len(row)))
                rep.table("%s (%s)" % (name, " ".join(
                    a.replace(tmpdir, "TMP").replace(REAL_DIR, "bench/real")
                    for a in args) if real else " ".join(case.args)),
                          headers, rows, note=note)

        if ft_cases:
            report_first_touch(rep, ft_cases, ft_results, allocators, reps)

    report_summary(rep, summary_time, summary_rss, ft_cases, ft_results,
                   allocators, summary_extra)
    if opts.plot:
        plot_first_touch(opts.plot, ft_cases, ft_results, allocators, reps,
                         header[1])
    rep.text("\ntotal harness time: %.0f s" % (time.time() - t_start))
    if failures:
        rep.text("\n%d FAILURE(S):" % len(failures))
        for f in failures:
            rep.text("  " + f)
        rep.md_only("\n**Failures:**\n\n" + "\n".join("- " + f for f in failures))
    rep.write()
    if raw:
        raw.close()
    return 1 if failures else 0


def report_first_touch(rep, cases, results, allocators, reps):
    ref = {}  # (fill, size) -> ns
    for c in cases:
        if c.info["mode"] == "memset":
            ref[(c.info["fill"], c.info["size"])] = results[c.label].get("ref")
    allocs = list(allocators)
    rows_ns = []
    for mode, fill in (("touch", "zero"), ("full", "pattern")):
        rows = []
        for c in cases:
            if c.info["mode"] != mode:
                continue
            size = c.info["size"]
            r = ref.get((fill, size))
            row = [c.label, ("%.1f" % (size / r * 1e9 / GIB)) if r else "-"]
            row_ns = [c.label, fmt_ns(r)]
            for a in allocs:
                ns = results[c.label].get(a)
                if ns is None:
                    row.append("FAIL")
                    row_ns.append("FAIL")
                    continue
                gibs = size / ns * 1e9 / GIB if ns > 0 else float("inf")
                ratio = (" (%.2fx)" % (ns / r)) if r else ""
                row.append("%.1f%s" % (gibs, ratio))
                row_ns.append(fmt_ns(ns))
            rows.append(row)
            rows_ns.append(row_ns)
        if not rows:
            continue
        if mode == "touch":
            title = ("first-touch, calloc + write 1 byte per 4 KiB page: GiB/s "
                     "(x = time / warm memset(0) of a dirty block)")
            refcol = "memset(0) GiB/s"
        else:
            title = ("first-touch, calloc + memset whole block: GiB/s "
                     "(x = time / warm memset of a non-zero byte)")
            refcol = "memset(v) GiB/s"
        rep.table(title, ["case", refcol] + allocs, rows,
                  note=("GiB/s = size / median time per round (calloc + "
                        "writes, free excluded); median over rounds within a "
                        "run, then over %d runs; higher GiB/s and lower x "
                        "are better" % reps))
    rep.table("first-touch: median time per round (reference = warm memset "
              "as above)", ["case", "reference"] + allocs, rows_ns)


def report_summary(rep, summary_time, summary_rss, ft_cases, ft_results,
                   allocators, extra=None):
    rows = []
    workloads = list(summary_time)
    # nothing for the geometric means (e.g. --only real-programs): no table
    for a in (allocators if workloads or ft_cases else []):
        tr = [summary_time[w][a] / summary_time[w]["glibc"] for w in workloads
              if a in summary_time[w] and "glibc" in summary_time[w]]
        rr = [summary_rss[w][a] / summary_rss[w]["glibc"] for w in workloads
              if a in summary_rss[w] and "glibc" in summary_rss[w]]
        bp = []
        for w in workloads:
            peers = [summary_time[w][p] for p in PEERS if p in summary_time[w]]
            if a in summary_time[w] and peers:
                bp.append(summary_time[w][a] / min(peers))
        ft = []
        for c in ft_cases:
            if c.info["mode"] == "memset":
                continue
            r = ft_results.get(c.label, {})
            if a in r and "glibc" in r and r["glibc"]:
                ft.append(r[a] / r["glibc"])
        g_ft = geomean(ft)
        rows.append([a, fmt_ratio(geomean(tr)), fmt_ratio(geomean(rr)),
                     fmt_ratio(geomean(bp)), fmt_ratio(g_ft),
                     "%d" % len(tr)])
    if rows:
        rep.table("summary (geometric means; < 1 is better)",
                  ["allocator", "time x glibc", "peak RSS x glibc",
                   "time x best peer", "first-touch x glibc", "workloads"],
                  rows,
                  note="time ratios use the median wall time per workload; "
                       "first-touch ratios use the median ns per round of "
                       "each touch/full case; best peer = fastest of %s per "
                       "workload" % "/".join(PEERS))

    extra = extra or {}
    if "prezero" in allocators and (workloads or extra):
        rows = []
        # then the workloads with their own metric (largepages, vm-create)
        for w in workloads + list(extra):
            t = extra[w] if w in extra else summary_time[w]
            peers = {p: t[p] for p in PEERS if p in t}
            if "prezero" not in t or not peers:
                continue
            best = min(peers, key=peers.get)
            rows.append([w, fmt_time(t["prezero"]), "%s %s"
                         % (best, fmt_time(peers[best])),
                         fmt_ratio(t["prezero"] / peers[best])])
        if rows:
            rep.table("prezero vs best peer", ["workload", "prezero s",
                                               "best peer s", "ratio"], rows)


def _complete(runs, a):
    """The runs of allocator a, or None unless every one succeeded."""
    good = [x for x in runs.get(a, []) if x.ok]
    return good if good and len(good) == len(runs[a]) else None


def _spread(xs):
    m = median(xs)
    return 100.0 * (max(xs) - min(xs)) / m if m else 0.0


def fmt_ms(s):
    if s is None:
        return "-"
    ms = s * 1e3
    return "%.0f ms" % ms if ms >= 100 else "%.1f ms" % ms


def report_largepages(rep, case, runs, allocs, reps):
    """largepages3 phases: one row per phase, one column per allocator.

    Returns {alloc: median first-touch seconds} for the summary."""
    good = {a: _complete(runs, a) for a in allocs}
    ok = [a for a in allocs if good[a]]
    med = {}  # (field, alloc) -> seconds
    for field, _ in PHASES:
        for a in ok:
            med[(field, a)] = median([int(x.fields[field]) for x in good[a]]) / 1e6
    rows = []
    for field, name in PHASES:
        row = [name]
        base = med.get((field, "glibc"))
        for a in allocs:
            t = med.get((field, a))
            if t is None:
                row.append("FAIL")
                continue
            row.append(fmt_ms(t) + ((" (%.2fx)" % (t / base)) if base else ""))
        rows.append(row)
    extra_rows = [
        ("first touch spread",
         lambda g: "%.0f%%" % _spread([int(x.fields["first_us"]) for x in g])),
        ("process wall s", lambda g: fmt_time(median([x.wall for x in g]))),
        ("process cpu s (user+sys)",
         lambda g: fmt_time(median([x.cpu for x in g]))),
        ("peak RSS MiB",
         lambda g: "%.0f" % (median([x.rss_kib for x in g]) / 1024.0)),
    ]
    for name, f in extra_rows:
        rows.append([name] + [f(good[a]) if good[a] else "FAIL"
                              for a in allocs])
    rep.table("largepages (%s): largepages3 phases over one malloc'd block, "
              "median time (x glibc)" % " ".join(case.args),
              ["phase"] + allocs, rows,
              note=("median of %d runs; each phase writes the whole block "
                    "(memset) or one byte per 4 KiB page (stride); the first "
                    "memset includes the page faults; spread = (max-min)/"
                    "median of the first phase; cpu includes any background "
                    "threads of the allocator" % reps))
    return {a: med[("first_us", a)] for a in ok}


def report_vm_create(rep, case, runs, allocs, reps):
    """vm-create: guest calloc + touch time per allocator.

    Returns {alloc: median create seconds} for the summary."""
    rows = []
    create = {}
    for a in allocs:
        g = _complete(runs, a)
        if not g:
            rows.append([a, "FAIL"] + [""] * 6)
            continue
        cr = [int(x.fields["create_us"]) / 1e6 for x in g]
        create[a] = median(cr)
        rows.append([a, fmt_ms(create[a]), "%.0f%%" % _spread(cr), "",
                     fmt_ms(median([int(x.fields["startup_us"]) / 1e6
                                    for x in g])),
                     fmt_time(median([x.wall for x in g])),
                     fmt_time(median([x.cpu for x in g])),
                     "%.0f" % (median([x.rss_kib for x in g]) / 1024.0)])
    for row in rows:
        a = row[0]
        if a in create and "glibc" in create and create["glibc"] > 0:
            r = create[a] / create["glibc"]
            row[3] = "%.3f" % r if r < 0.1 else fmt_ratio(r)
    notes = ["median of %d runs; create = calloc(guest) + one write per "
             "4 KiB page, after a start-up phase of %d ms of CPU work; "
             "wall and cpu are the whole process (cpu = user+sys, including "
             "the allocator's background threads, e.g. prezero's workers "
             "pre-faulting the pool)" % (reps, case.info["startup_ms"])]
    if case.env_text():
        notes.append("per-allocator environment: " + case.env_text())
    if "prezero" in create and "glibc" in create:
        pz, gl = create["prezero"], create["glibc"]
        speed = gl / pz if pz > 0 else float("inf")
        notes.append("goal: prezero's create at least %.0fx faster than "
                     "glibc's: glibc / prezero = %s / %s = %.2f: %s"
                     % (VM_GOAL, fmt_ms(gl), fmt_ms(pz), speed,
                        "met" if speed >= VM_GOAL else "NOT met"))
    rep.table("%s (%s): guest RAM + touch every page" % (case.label, " ".join(case.args)),
              ["allocator", "create", "spread", "x glibc", "startup",
               "wall s", "cpu s", "peak RSS MiB"], rows,
              note="\n".join(notes))
    return create


PLOT_STYLE = {  # allocator -> (colour, marker)
    "glibc": ("#1f77b4", "o"),
    "jemalloc": ("#ff7f0e", "s"),
    "tcmalloc": ("#2ca02c", "^"),
    "mimalloc": ("#9467bd", "D"),
    "prezero": ("#d62728", "*"),
}


def plot_first_touch(path, cases, results, allocators, reps, machine):
    """Time per GiB against block size for the first-touch touch cases."""
    touch = sorted((c for c in cases if c.info["mode"] == "touch"),
                   key=lambda c: c.info["size"])
    if not touch:
        print("note: --plot: no first-touch results in this run "
              "(add first-touch to --only); plot skipped")
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import (FixedLocator, FormatStrFormatter,
                                       LogLocator, NullFormatter, NullLocator)
    except ImportError:
        print("note: --plot needs matplotlib, which %s cannot import; "
              "install it with `apt-get install python3-matplotlib` and run "
              "run.py with /usr/bin/python3 (Debian's Python); plot skipped"
              % sys.executable)
        return

    def per_gib(ns, size):  # ms per GiB
        return ns / 1e6 * GIB / size

    fig, ax = plt.subplots(figsize=(11, 6))
    for a in allocators:
        colour, marker = PLOT_STYLE.get(a, ("grey", "x"))
        for idle in sorted({c.info["idle"] for c in touch}):
            pts = [(c.info["size"], per_gib(results[c.label][a], c.info["size"]))
                   for c in touch if c.info["idle"] == idle
                   and results.get(c.label, {}).get(a)]
            if not pts:
                continue
            xs, ys = zip(*pts)
            label = a if not idle else "%s, %d ms idle between rounds" % (a, idle)
            ax.plot(xs, ys, color=colour, marker=marker,
                    linestyle="-" if not idle else "--",
                    markersize=7 if not idle else 9,
                    markerfacecolor=colour if not idle else "none",
                    linewidth=1.8 if not idle else 1.2, label=label)
    ref = sorted((c.info["size"], per_gib(results[c.label]["ref"], c.info["size"]))
                 for c in cases if c.info["mode"] == "memset"
                 and c.info.get("fill") == "zero"
                 and results.get(c.label, {}).get("ref"))
    if ref:
        xs, ys = zip(*ref)
        ax.plot(xs, ys, color="black", linestyle=":", linewidth=2,
                marker=".", label="reference: warm memset(0) of a dirty block")
    sizes = sorted({c.info["size"] for c in touch})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([size_label(s) + "iB" if s >= KIB else str(s)
                        for s in sizes])
    ax.set_xlabel("block size per calloc (bytes, log scale)")
    ax.set_ylabel("time per GiB (ms/GiB, log scale; lower is better)")
    ax.set_title("first-touch: calloc + write 1 byte per 4 KiB page\n"
                 "median of %d runs; %s" % (reps, machine), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0, title="allocator", title_fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        print("note: --plot: cannot write %s: %s" % (path, e))
        return
    finally:
        plt.close(fig)
    print("\nplot written to %s" % path)


if __name__ == "__main__":
    sys.exit(main())
