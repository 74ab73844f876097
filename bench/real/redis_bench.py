"""bench/real/redis_bench.py: the redis real-program workload of bench/run.py.

    /usr/bin/python3 bench/real/redis_bench.py [requests=N] [pipeline=P]
        [clients=C] [size=D] [keys=R] [passes=K]

Starts redis-server under the allocator named by $PZ_BENCH_PRELOAD (a .so
path; empty or unset: no preload) on a unix socket in a temporary directory,
with persistence off, and drives it with redis-benchmark (never preloaded):
SET, GET and LPUSH, N requests each, D-byte values over R random keys, C
clients, pipelined by P; that K times (passes), the best rate of each test
counting (a pass disturbed by other load on the machine is dropped).  The
server and the client are pinned to different CPUs when the machine has two
or more.  This driver runs without the
preload; run.py starts it with LD_PRELOAD removed and passes the library in
$PZ_BENCH_PRELOAD.

Checks: the preload is mapped into the server, all three tests reported a
rate, LLEN mylist == K*N, a random string key has D bytes, INFO memory's
used_memory is plausible, and the server exits cleanly on SHUTDOWN NOSAVE.

Last line: "ok <check> requests=3N bench_us=T hwm_kib=K set_rps=..
get_rps=.. lpush_rps=.. used_memory=.. used_memory_rss=.. mem_allocator=.."
where T = sum over the tests of N / best rate (the time the requests took
at that rate, without start-up and shutdown) and K is the server's
peak RSS (VmHWM) just before shutdown.
"""
import os
import subprocess
import sys
import tempfile
import time

opts = {"requests": 1000000, "pipeline": 16, "clients": 50, "size": 32,
        "keys": 100000, "passes": 1}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    if k not in opts:
        sys.exit("unknown argument %r (known: %s)" % (a, ", ".join(opts)))
    opts[k] = int(v)
N, P, C, D, R, K = (opts[k] for k in ("requests", "pipeline", "clients", "size",
                                      "keys", "passes"))
TESTS = ["SET", "GET", "LPUSH"]

preload = os.environ.get("PZ_BENCH_PRELOAD", "")
base_env = dict(os.environ)
base_env.pop("LD_PRELOAD", None)
base_env.pop("PZ_BENCH_PRELOAD", None)
server_env = dict(base_env)
if preload:
    server_env["LD_PRELOAD"] = preload

try:
    cpus = sorted(os.sched_getaffinity(0))
except AttributeError:
    cpus = []
SERVER_CPU = {cpus[0]} if len(cpus) >= 2 else None
CLIENT_CPU = {cpus[1]} if len(cpus) >= 2 else None


def pin(cpuset):
    if cpuset is None:
        return None
    return lambda: os.sched_setaffinity(0, cpuset)


def fail(msg):
    print("redis_bench: " + msg, file=sys.stderr)
    sys.exit(1)


with tempfile.TemporaryDirectory(prefix="pz-redis-") as tmp:
    sock = os.path.join(tmp, "redis.sock")
    log = open(os.path.join(tmp, "server.log"), "w")
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", sock,
         "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
         "--dir", tmp, "--daemonize", "no", "--loglevel", "warning"],
        env=server_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=pin(SERVER_CPU))

    def cli(*args):
        r = subprocess.run(["redis-cli", "-s", sock] + list(args), env=base_env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        return r.stdout.strip()

    def server_log():
        log.flush()
        with open(os.path.join(tmp, "server.log")) as f:
            return " | ".join(f.read().splitlines()[-5:])

    try:
        for _ in range(200):
            if server.poll() is not None:
                fail("redis-server exited with %s: %s" % (server.returncode, server_log()))
            if os.path.exists(sock) and cli("PING") == "PONG":
                break
            time.sleep(0.05)
        else:
            fail("redis-server did not come up: " + server_log())
        with open("/proc/%d/maps" % server.pid) as f:
            maps = f.read()
        if preload and preload not in maps:
            fail("%s is not mapped into redis-server" % preload)

        rps = {}  # test -> best rate over the passes
        for _ in range(K):
            bench = subprocess.run(
                ["redis-benchmark", "-s", sock, "-t", ",".join(t.lower() for t in TESTS),
                 "-n", str(N), "-P", str(P), "-c", str(C), "-d", str(D), "-r", str(R),
                 "--csv"],
                env=base_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=300, preexec_fn=pin(CLIENT_CPU))
            if bench.returncode != 0:
                fail("redis-benchmark exited %d: %s" % (bench.returncode, bench.stderr[-300:]))
            got = {}
            for line in bench.stdout.splitlines():
                cells = [c.strip('"') for c in line.split(",")]
                if len(cells) >= 2 and cells[0] in TESTS:
                    got[cells[0]] = float(cells[1])
            missing = [t for t in TESTS if not got.get(t)]
            if missing:
                fail("no rate for %s in redis-benchmark output: %r"
                     % (",".join(missing), bench.stdout[-300:]))
            for t in TESTS:
                rps[t] = max(rps.get(t, 0.0), got[t])
        if server.poll() is not None:
            fail("redis-server died under redis-benchmark: " + server_log())

        llen = cli("LLEN", "mylist")
        if llen != str(K * N):
            fail("LLEN mylist = %r, expected %d" % (llen, K * N))
        for _ in range(50):
            k = cli("RANDOMKEY")
            if k.startswith("key:"):
                break
        else:
            fail("no key:* string key found")
        strlen = cli("STRLEN", k)
        if strlen != str(D):
            fail("STRLEN %s = %r, expected %d" % (k, strlen, D))
        dbsize = int(cli("DBSIZE") or 0)
        if not (R // 2 <= dbsize <= R + 1):
            fail("DBSIZE = %d, expected about %d" % (dbsize, R + 1))
        info = {}
        for line in cli("INFO", "memory").splitlines():
            k2, _, v = line.partition(":")
            info[k2] = v.strip()
        used = int(info.get("used_memory", 0))
        # the data set: >= D bytes per key plus N list items; < 1 GiB
        if not (dbsize * D <= used < (1 << 30)):
            fail("implausible used_memory %d for %d keys" % (used, dbsize))
        with open("/proc/%d/status" % server.pid) as f:
            status = dict(l.split(":", 1) for l in f if ":" in l)
        hwm_kib = int(status["VmHWM"].split()[0])
        cli("SHUTDOWN", "NOSAVE")
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail("redis-server did not exit after SHUTDOWN NOSAVE")
        if code != 0:
            fail("redis-server exited %d at shutdown: %s" % (code, server_log()))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    bench_us = sum(N / rps[t] for t in TESTS) * 1e6
    print("ok redis-n%d-d%d-k%d requests=%d bench_us=%d hwm_kib=%d set_rps=%d get_rps=%d "
          "lpush_rps=%d used_memory=%d used_memory_rss=%s mem_allocator=%s"
          % (N, D, K, N * len(TESTS), bench_us, hwm_kib, rps["SET"], rps["GET"],
             rps["LPUSH"], used, info.get("used_memory_rss", "?"),
             info.get("mem_allocator", "?")))
