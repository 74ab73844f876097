#!/usr/bin/python3
"""vmm: real VMMs and runtimes creating guest memory, per allocator.

The seeds' headline is creating a virtual machine's memory.  These cases
run the real programs (Debian's QEMU and OpenJDK), not a program of ours
that maps memory the way we assumed, under glibc (no preload), jemalloc,
tcmalloc_minimal, mimalloc and prezero, interleaved, and report the
median and the range of each:

  hotplug  QEMU (q35, stopped with -S, no guest code runs) is started and
           driven over QMP.  After a warm-up of --warm seconds (the time a
           VMM driven by an API runs before it creates memory; prezero gets
           PREZERO_POOL_MIN=<size> to fill its pool meanwhile), one
           `object-add memory-backend-ram size=<size> prealloc=on` is
           timed: QEMU maps the backend (a PROT_NONE reservation, then
           MAP_FIXED read/write over it), madvises it MADV_HUGEPAGE and
           preallocates it with MADV_POPULATE_WRITE.  RSS after it is
           QEMU's VmRSS right after the command returns (the pool's
           refill for PREZERO_POOL_MIN comes later, in the background).
           For prezero the bytes moved in from the pool are read from
           PREZERO_STATS at exit.
  boot     `qemu-system-x86_64 -m <size> -mem-prealloc -S`, cold: the time
           from exec until QMP answers (guest RAM is preallocated before
           that).  prezero with default settings: nothing is warm, it must
           not be slower than glibc.
  jvm      `java -Xms<size> -Xmx<size> -XX:+AlwaysPreTouch -version`: the
           JVM reserves its heap, commits it with MAP_FIXED over the
           reservation and touches every page at start.  Cold; prezero
           with default settings must not be slower.
  guarded, guarded-nothp
           the rust-vmm shape (bench/vmm-guarded.c, no real VMM needed):
           after --warm seconds (the VMM's API phase; prezero gets
           PREZERO_POOL_MIN=<size>), guest RAM is mapped as Firecracker's
           guarded region (PROT_NONE|MAP_NORESERVE reservation with a guard
           page each side, MAP_FIXED|MAP_NORESERVE|MAP_PRIVATE|MAP_ANONYMOUS
           read/write inside), advised MADV_HUGEPAGE as Cloud Hypervisor
           does by default (guarded; guarded-nothp: not advised), and
           --vcpus threads touch their parts in order, one write per 4 KiB
           page, no preallocation.  The touch is timed.

Needs qemu-system-x86 (bench/demo.sh installs it as root: PZ_VMM_PKGS in
test/deps.sh) and, for jvm, openjdk-17-jre-headless (apt-get install it);
a case whose program is missing is skipped with a line saying so.
Standard library only:

    /usr/bin/python3 bench/vmm.py --builddir build [--reps 3] [--size 4G]
        [--warm 8] [--vcpus 2] [--only hotplug,boot,jvm,guarded,guarded-nothp]
        [--allocators glibc,...]
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from run import PEER_LIBS  # the peers' libraries, as the harness preloads them


def size_bytes(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s)
    if not m:
        raise argparse.ArgumentTypeError("size like 4G: %r" % s)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def env_for(alloc, prezero, extra):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PREZERO_") or k == "LD_PRELOAD":
            del env[k]
    lib = prezero if alloc == "prezero" else PEER_LIBS[alloc]
    if lib:
        env["LD_PRELOAD"] = lib
    if alloc == "prezero":
        env["PREZERO_STATS"] = "1"
        env.update(extra)
    return env


class QMP:
    def __init__(self, path, timeout=120):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.read()  # the greeting
        self.call("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, cmd, args=None):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        while True:
            r = self.read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError("%s: %s" % (cmd, r["error"].get("desc")))


def start_qemu(env, args, sock):
    if os.path.exists(sock):
        os.unlink(sock)
    t0 = time.monotonic()
    p = subprocess.Popen(["qemu-system-x86_64", "-M", "q35", "-S", "-nodefaults", "-display", "none",
                          "-qmp", "unix:%s,server=on,wait=off" % sock] + args,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not os.path.exists(sock):
        if p.poll() is not None:
            raise RuntimeError("qemu exited: %s" % p.stderr.read().decode()[-500:])
        time.sleep(0.005)
    for _ in range(2000):
        try:
            q = QMP(sock)
            return p, q, time.monotonic() - t0
        except (ConnectionRefusedError, FileNotFoundError):
            time.sleep(0.005)
    raise RuntimeError("QMP did not answer")


def stop_qemu(p, q):
    try:
        q.call("quit")
    except (RuntimeError, OSError):
        pass
    err = p.stderr.read().decode(errors="replace")
    p.wait(timeout=60)
    return err


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def moved_mib(stats):
    m = re.search(r"by moving huge pages in\s+(\d+)\s*(B|KiB|MiB)", stats)
    if not m:
        return None
    return float(m.group(1)) * {"B": 1 / (1 << 20), "KiB": 1 / 1024, "MiB": 1}[m.group(2)]


def case_hotplug(alloc, opts, tmp):
    env = env_for(alloc, opts.prezero, {"PREZERO_POOL_MIN": opts.size_label})
    p, q, _ = start_qemu(env, ["-m", "1G,slots=4,maxmem=%dG" % (2 * (opts.size >> 30) + 2)], tmp + "/q.sock")
    time.sleep(opts.warm)
    t0 = time.monotonic()
    q.call("object-add", {"qom-type": "memory-backend-ram", "id": "m1", "size": opts.size, "prealloc": True})
    dt = time.monotonic() - t0
    rss = rss_mib(p.pid)
    err = stop_qemu(p, q)
    return {"time": dt, "rss": rss, "moved": moved_mib(err) if alloc == "prezero" else None}


def case_boot(alloc, opts, tmp):
    env = env_for(alloc, opts.prezero, {})
    p, q, dt = start_qemu(env, ["-m", opts.size_label, "-mem-prealloc"], tmp + "/q.sock")
    rss = rss_mib(p.pid)
    stop_qemu(p, q)
    return {"time": dt, "rss": rss, "moved": None}


def case_jvm(alloc, opts, tmp):
    env = env_for(alloc, opts.prezero, {})
    t0 = time.monotonic()
    r = subprocess.run(["java", "-Xms" + opts.size_label, "-Xmx" + opts.size_label, "-XX:+AlwaysPreTouch",
                        "-version"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("java failed: %s" % r.stderr.decode()[-300:])
    return {"time": dt, "rss": None, "moved": None}


def case_guarded(alloc, opts, tmp, thp=1):
    env = env_for(alloc, opts.prezero, {"PREZERO_POOL_MIN": opts.size_label})
    exe = os.path.join(opts.builddir, "bench", "bench-vmm-guarded")
    r = subprocess.run([exe, "guest=%d" % opts.size, "vcpus=%d" % opts.vcpus, "thp=%d" % thp,
                        "delay_ms=%d" % int(opts.warm * 1000)], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=600)
    out, err = r.stdout.decode(), r.stderr.decode(errors="replace")
    m = re.search(r"^ok \S+ touch_us=(\d+)", out, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError("bench-vmm-guarded failed (%d): %s" % (r.returncode, (out + err)[-500:]))
    return {"time": int(m.group(1)) / 1e6, "rss": None, "moved": moved_mib(err) if alloc == "prezero" else None}


def case_guarded_nothp(alloc, opts, tmp):
    return case_guarded(alloc, opts, tmp, thp=0)


CASES = {"hotplug": case_hotplug, "boot": case_boot, "jvm": case_jvm, "guarded": case_guarded,
         "guarded-nothp": case_guarded_nothp}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", default="build")
    ap.add_argument("--prezero", help="libprezero.so (default BUILDDIR/src/libprezero.so)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=size_bytes, default=size_bytes("4G"))
    ap.add_argument("--warm", type=float, default=8.0)
    ap.add_argument("--vcpus", type=int, default=2, help="touching threads for guarded, guarded-nothp")
    ap.add_argument("--only", default="hotplug,boot,jvm,guarded,guarded-nothp")
    ap.add_argument("--allocators", default="glibc,jemalloc,tcmalloc,mimalloc,prezero")
    opts = ap.parse_args()
    opts.prezero = os.path.abspath(opts.prezero or os.path.join(opts.builddir, "src", "libprezero.so"))
    opts.size_label = "%dG" % (opts.size >> 30) if opts.size % (1 << 30) == 0 else "%dM" % (opts.size >> 20)
    allocs = [a for a in opts.allocators.split(",") if a == "prezero" or (PEER_LIBS.get(a, 0) is None or
                                                                           os.path.exists(PEER_LIBS[a]))]
    cases = opts.only.split(",")
    for c in cases:
        if c not in CASES:
            sys.exit("unknown case %s (%s)" % (c, ", ".join(CASES)))
    guarded = os.path.join(opts.builddir, "bench", "bench-vmm-guarded")
    need = {"hotplug": "qemu-system-x86_64", "boot": "qemu-system-x86_64", "jvm": "java",
            "guarded": guarded, "guarded-nothp": guarded}
    cases = [c for c in cases if shutil.which(need[c]) or print("vmm: %s skipped: no %s" % (c, need[c]))]
    tmp = tempfile.mkdtemp(prefix="pz-vmm-")
    results = {c: {a: [] for a in allocs} for c in cases}
    try:
        for rep in range(opts.reps):
            for c in cases:
                for a in allocs:  # interleaved: every allocator once per round
                    r = CASES[c](a, opts, tmp)
                    results[c][a].append(r)
                    print("vmm: round %d %-8s %-9s %.3f s%s%s" % (
                        rep + 1, c, a, r["time"], "  RSS %d MiB" % r["rss"] if r["rss"] is not None else "",
                        "  moved from the pool %d MiB" % r["moved"] if r["moved"] is not None else ""), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for c in cases:
        print("== %s (%s, %d rounds%s) ==" % (c, opts.size_label, opts.reps,
                                                ", warm-up %g s" % opts.warm if c in ("hotplug", "guarded",
                                                                                   "guarded-nothp") else ""))
        base = statistics.median(r["time"] for r in results[c]["glibc"]) if "glibc" in allocs else None
        print("%-9s %9s  %-17s %8s %10s %12s" % ("allocator", "median s", "range s", "x glibc", "RSS MiB",
                                                 "from pool"))
        for a in allocs:
            ts = [r["time"] for r in results[c][a]]
            med = statistics.median(ts)
            rss = [r["rss"] for r in results[c][a] if r["rss"] is not None]
            mv = [r["moved"] for r in results[c][a] if r["moved"] is not None]
            print("%-9s %9.3f  %-17s %8s %10s %12s" % (
                a, med, "%.3f-%.3f" % (min(ts), max(ts)), "%.2f" % (med / base) if base else "-",
                "%d" % statistics.median(rss) if rss else "-", "%d MiB" % statistics.median(mv) if mv else "-"))
        print()


if __name__ == "__main__":
    main()
