#!/usr/bin/python3
"""guests: how many guests fit in a memory budget, per allocator.

The measure of the kernel's free page reporting series: a guest that frees
memory after a start-up peak should give it back, so that more guests fit
in the host's memory.  Here a "guest" is bench/guests.c (bench-guests): it
callocs a peak of P bytes, writes every page, holds it ~0.5 s, frees all
but its working set W and then idles, touching W every 200 ms.

For each allocator (glibc without preload, jemalloc, tcmalloc_minimal,
mimalloc, prezero with default settings, and prezero with
PREZERO_RETAIN_MS=0) the driver creates a memory cgroup with a budget B
(cgroup v1: memory.limit_in_bytes, and memory.memsw.limit_in_bytes so
nothing swaps), a child of the driver's own memory cgroup, and starts
guests in it one after another: start guest k, wait until it prints
"idle", wait a settle time S, start the next.  It stops when a guest dies
(the OOM killer), when a guest does not reach idle within a timeout, or
at a maximum count.  The result is the number of guests alive and idle at
the end.  Then all guests get SIGTERM, the cgroup is removed and the next
allocator runs.

Needs root (it creates cgroups) and a cgroup v1 memory controller (cgroup
v2 with the memory controller enabled works too).  Standard library only.
Run it with Debian's Python:

    /usr/bin/python3 bench/guests.py --builddir build [--quick]
        [--budget 6G] [--peak 1536M] [--ws 128M] [--settle 3] [--max 40]
        [--allocators glibc,jemalloc,tcmalloc,mimalloc,prezero,prezero-retain0]
        [--logdir DIR] [--final-wait 11]

A sampler records the cgroup's usage and every guest's RSS every 100 ms;
with --logdir the samples, each guest's stdout/stderr (prezero's guests run
with PREZERO_STATS=1: the statistics print when the guest exits on SIGTERM)
and the kernel's OOM messages are kept there.
"""

import argparse
import hashlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEER_LIBS = {
    "glibc": None,
    "jemalloc": LIBDIR + "/libjemalloc.so.2",
    "tcmalloc": LIBDIR + "/libtcmalloc_minimal.so.4",
    "mimalloc": LIBDIR + "/libmimalloc.so.2",
}
PEERS = list(PEER_LIBS)
# name -> (library key, extra environment)
VARIANTS = {
    "glibc": ("glibc", {}),
    "jemalloc": ("jemalloc", {}),
    "tcmalloc": ("tcmalloc", {}),
    "mimalloc": ("mimalloc", {}),
    "prezero": ("prezero", {"PREZERO_STATS": "1"}),
    "prezero-retain0": ("prezero", {"PREZERO_STATS": "1",
                                    "PREZERO_RETAIN_MS": "0"}),
}
DEFAULT_ORDER = ["glibc", "jemalloc", "tcmalloc", "mimalloc", "prezero",
                 "prezero-retain0"]
APT_PACKAGES = "libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0"

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 0.1


def parse_size(s):
    s = s.strip()
    mult = 1
    for suf, m in (("KiB", KIB), ("MiB", MIB), ("GiB", GIB),
                   ("K", KIB), ("M", MIB), ("G", GIB), ("T", GIB << 10)):
        if s.endswith(suf):
            s, mult = s[:-len(suf)], m
            break
    return int(float(s) * mult)


def mib(n):
    return "-" if n is None else "%.0f" % (n / MIB)


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_int(path):
    t = read_text(path)
    try:
        return int(t.split()[0]) if t else None
    except ValueError:
        return None


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------
# cgroups
# ---------------------------------------------------------------------------

class Cgroup:
    """A child memory cgroup of the driver's own, with a hard limit."""

    def __init__(self, name, limit):
        self.v1 = None
        own = read_text("/proc/self/cgroup") or ""
        v1path = v2path = None
        for line in own.splitlines():
            num, ctrls, path = line.split(":", 2)
            if num == "0" and ctrls == "":
                v2path = path
            elif "memory" in ctrls.split(","):
                v1path = path
        if v1path is not None and os.path.isdir("/sys/fs/cgroup/memory"):
            self.v1 = True
            parent = "/sys/fs/cgroup/memory" + v1path.rstrip("/")
        elif v2path is not None:
            self.v1 = False
            root = "/sys/fs/cgroup"
            if not os.path.exists(root + "/cgroup.controllers"):
                root = "/sys/fs/cgroup/unified"
            parent = root + v2path.rstrip("/")
            ctl = read_text(parent + "/cgroup.subtree_control") or ""
            if "memory" not in ctl.split():
                write_text(parent + "/cgroup.subtree_control", "+memory")
        else:
            raise RuntimeError("no memory cgroup controller found")
        self.parent = parent
        self.path = os.path.join(parent, name)
        if os.path.isdir(self.path):
            os.rmdir(self.path)
        os.mkdir(self.path)
        self.limit = limit
        self.memsw = False
        if self.v1:
            write_text(self.f("memory.limit_in_bytes"), str(limit))
            if os.path.exists(self.f("memory.memsw.limit_in_bytes")):
                write_text(self.f("memory.memsw.limit_in_bytes"), str(limit))
                self.memsw = True
            if os.path.exists(self.f("memory.swappiness")):
                try:
                    write_text(self.f("memory.swappiness"), "0")
                except OSError:
                    pass
        else:
            write_text(self.f("memory.max"), str(limit))
            if os.path.exists(self.f("memory.swap.max")):
                write_text(self.f("memory.swap.max"), "0")
                self.memsw = True

    def f(self, name):
        return os.path.join(self.path, name)

    def procs_file(self):
        return self.f("cgroup.procs")

    def usage(self):
        return read_int(self.f("memory.usage_in_bytes" if self.v1
                               else "memory.current"))

    def peak(self):
        return read_int(self.f("memory.max_usage_in_bytes" if self.v1
                               else "memory.peak"))

    def failcnt(self):
        if self.v1:
            return read_int(self.f("memory.failcnt"))
        ev = self.events()
        return ev.get("max")

    def events(self):
        """v1 memory.oom_control / v2 memory.events as a dict."""
        t = read_text(self.f("memory.oom_control" if self.v1
                             else "memory.events")) or ""
        out = {}
        for line in t.splitlines():
            k, _, v = line.partition(" ")
            try:
                out[k] = int(v)
            except ValueError:
                pass
        return out

    def oom_kills(self):
        return self.events().get("oom_kill", 0)

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                time.sleep(0.1)
        return False


# ---------------------------------------------------------------------------
# guests
# ---------------------------------------------------------------------------

def proc_rss(pid):
    """Resident bytes of pid (from /proc/PID/statm), None if gone."""
    t = read_text("/proc/%d/statm" % pid)
    if not t:
        return None
    try:
        return int(t.split()[1]) * PAGE
    except (IndexError, ValueError):
        return None


class Guest:
    def __init__(self, k, exe, args, env, cg, logdir):
        self.k = k
        self.t_start = time.monotonic()
        self.t_idle = None
        self.gibps = None
        self.peak_us = None
        self.idle_rss_kib = None
        self.lines = []
        self.idle_event = threading.Event()
        self.eof = False
        self.err_path = os.path.join(logdir, "guest%02d.stderr" % k)
        # The shell moves itself into the cgroup, then execs the guest (same
        # pid): the guest's first allocation is charged to the cgroup.
        argv = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"',
                cg.procs_file(), exe] + list(args)
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=err, env=env, close_fds=True)
        self.pid = self.proc.pid
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append((time.monotonic(), line))
            toks = line.split()
            if not toks:
                continue
            kv = dict(t.partition("=")[::2] for t in toks[1:])
            if toks[0] == "peak":
                self.gibps = float(kv.get("gibps", "nan"))
                self.peak_us = int(kv.get("us", "0"))
            elif toks[0] == "idle":
                self.idle_rss_kib = int(kv.get("rss_kib", "-1"))
                self.t_idle = time.monotonic()
                self.idle_event.set()
        self.eof = True
        self.idle_event.set()  # EOF: wake a waiter

    def alive(self):
        return self.proc.poll() is None

    def status_text(self):
        rc = self.proc.poll()
        if rc is None:
            return "running"
        if rc < 0:
            try:
                return "killed by %s" % signal.Signals(-rc).name
            except ValueError:
                return "killed by signal %d" % -rc
        return "exit %d" % rc

    def stop(self, sig=signal.SIGTERM):
        if self.alive():
            try:
                self.proc.send_signal(sig)
            except OSError:
                pass

    def stderr_text(self):
        return read_text(self.err_path) or ""


class Sampler(threading.Thread):
    """Cgroup usage and every guest's RSS every SAMPLE_S seconds."""

    def __init__(self, cg, guests, t0):
        super().__init__(daemon=True)
        self.cg, self.guests, self.t0 = cg, guests, t0
        self.samples = []  # (t, usage, {k: rss})
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            t = time.monotonic() - self.t0
            u = self.cg.usage()
            rss = {}
            for g in list(self.guests):
                if g.alive():
                    r = proc_rss(g.pid)
                    if r is not None:
                        rss[g.k] = r
            self.samples.append((t, u, rss))
            self.halt.wait(SAMPLE_S)


def dmesg_lines():
    try:
        out = subprocess.run(["dmesg"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10)
        if out.returncode != 0:
            return None
        return out.stdout.decode("utf-8", "replace").splitlines()
    except (OSError, subprocess.SubprocessError):
        return None


def parse_stats(text):
    """prezero's PREZERO_STATS block -> {label: text value}."""
    out = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("prezero ") and "statistics" in line:
            inside = True
            continue
        if inside and line.startswith("  "):
            # "label words  123 MiB" or "label words  123"
            s = line.strip()
            m = re.match(r"(.*?)\s{2,}(\S+(?: \S+)?)$", s)
            if m:
                out[m.group(1).strip()] = m.group(2)
    return out


def stat_bytes(v):
    if v is None:
        return 0
    n, _, unit = v.partition(" ")
    mult = {"B": 1, "KiB": KIB, "MiB": MIB, "GiB": GIB, "TiB": GIB << 10,
            "": 1}.get(unit, 1)
    try:
        return int(float(n) * mult)
    except ValueError:
        return 0


# ---------------------------------------------------------------------------
# one allocator
# ---------------------------------------------------------------------------

class Outcome:
    pass


def run_allocator(name, lib, extra_env, opts, exe, logroot, log):
    out = Outcome()
    out.name = name
    logdir = os.path.join(logroot, name)
    os.makedirs(logdir, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("PREZERO_")}
    env.update(extra_env)
    if lib:
        env["LD_PRELOAD"] = lib
    args = ["peak=%d" % opts.peak, "ws=%d" % opts.ws,
            "block=%d" % opts.block,
            "wsblock=" + ",".join(str(x) for x in opts.wsblock_list),
            "small=%d" % opts.small, "hold_ms=%d" % opts.hold_ms,
            "period_ms=%d" % opts.period_ms]

    cg = Cgroup("prezero-guests-%d-%s" % (os.getpid(), name), opts.budget)
    dm0 = dmesg_lines()
    guests = []
    t0 = time.monotonic()
    sampler = Sampler(cg, guests, t0)
    sampler.start()
    out.reason = "max count (%d)" % opts.max
    out.stop_t = None
    try:
        for k in range(1, opts.max + 1):
            g = Guest(k, exe, args, env, cg, logdir)
            guests.append(g)
            deadline = time.monotonic() + opts.idle_timeout
            while not g.idle_event.is_set() and time.monotonic() < deadline:
                g.idle_event.wait(0.05)
                if any(not h.alive() for h in guests):
                    break
            if g.t_idle is None and g.eof:
                # its stdout closed before it printed "idle": it is dying;
                # wait for the exit status rather than call it a timeout
                try:
                    g.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            dead = [h for h in guests if not h.alive()]
            if dead and g.alive() and g.t_idle is None:
                # another guest died (the OOM killer chose it): let this
                # one finish its peak, so the count of idle guests is right
                g.idle_event.wait(max(0.0, deadline - time.monotonic()))
            if dead:
                out.reason = "guest %s %s while guest %d started" % (
                    ",".join(str(h.k) for h in dead),
                    "/".join(sorted({h.status_text() for h in dead})), k)
                break
            if g.t_idle is None:
                out.reason = "guest %d not idle after %ds" % (
                    k, opts.idle_timeout)
                break
            # settle, watching for deaths
            end = time.monotonic() + opts.settle
            while time.monotonic() < end:
                if any(not h.alive() for h in guests):
                    break
                time.sleep(0.05)
            dead = [h for h in guests if not h.alive()]
            if dead:
                out.reason = "guest %s %s after guest %d was idle" % (
                    ",".join(str(h.k) for h in dead),
                    "/".join(sorted({h.status_text() for h in dead})), k)
                break
            u = cg.usage()
            log("  %-16s guest %2d idle after %5.2fs  %5.2f GiB/s  "
                "cgroup %5s MiB  t=%.1fs"
                % (name, k, g.t_idle - g.t_start, g.gibps or 0, mib(u),
                   time.monotonic() - t0))
        out.stop_t = time.monotonic() - t0
        time.sleep(0.3)  # let a dying guest finish dying
        alive = [g for g in guests if g.alive() and g.t_idle is not None]
        out.fit = len(alive)
        out.started = len(guests)
        out.rss_end = sum(proc_rss(g.pid) or 0 for g in alive)
        out.usage_end = cg.usage()
        out.rss_final = out.usage_final = None
        if opts.final_wait > 0 and alive:
            time.sleep(opts.final_wait)
            still = [g for g in alive if g.alive()]
            out.rss_final = sum(proc_rss(g.pid) or 0 for g in still)
            out.usage_final = cg.usage()
        out.measured_t = time.monotonic() - t0  # samples after: shutdown
        gib = [g.gibps for g in guests if g.gibps is not None]
        out.gibps = statistics.median(gib) if gib else None
        out.failcnt = cg.failcnt()
        out.events = cg.events()
        out.peak_usage = cg.peak()
    finally:
        for g in guests:
            g.stop()
        deadline = time.monotonic() + 15
        for g in guests:
            try:
                g.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                g.stop(signal.SIGKILL)
                g.proc.wait()
        sampler.halt.set()
        sampler.join()
        for g in guests:
            g.reader.join(2)
        out.removed = cg.remove()
    out.wall = time.monotonic() - t0
    out.guests = guests
    out.samples = sampler.samples
    out.memsw = cg.memsw
    out.cgroup = cg.path

    # kernel messages about this cgroup's OOM kills
    dm1 = dmesg_lines()
    out.dmesg = None
    if dm1 is not None:
        new = dm1[len(dm0):] if dm0 is not None and len(dm1) >= len(dm0) \
            else dm1
        # only this cgroup's messages (other programs may have OOMs too)
        cgname = os.path.basename(cg.path)
        pids = {g.pid for g in guests}
        out.dmesg = [l for l in new if cgname in l or any(
            re.search(r"Killed process %d\b" % p, l) for p in pids)]
        with open(os.path.join(logdir, "dmesg.txt"), "w") as f:
            f.write("\n".join(new) + "\n")

    # prezero statistics from the guests' stderr (printed at exit)
    out.pz = None
    if VARIANTS[name][0] == "prezero":
        ev = rel = 0
        seen = 0
        for g in guests:
            st = parse_stats(g.stderr_text())
            if st:
                seen += 1
                try:
                    ev += int(st.get("memory pressure events", "0"))
                except ValueError:
                    pass
                rel += stat_bytes(st.get("idle memory released"))
        out.pz = {"guests": seen, "pressure_events": ev, "released": rel}

    write_samples(out, logdir)
    out.release_s = release_times(out, opts)
    return out


def write_samples(out, logdir):
    ks = [g.k for g in out.guests]
    with open(os.path.join(logdir, "samples.csv"), "w") as f:
        f.write("t_s,cgroup_mib," + ",".join("g%d_mib" % k for k in ks) + "\n")
        for t, u, rss in out.samples:
            f.write("%.2f,%s," % (t, mib(u)) +
                    ",".join(mib(rss.get(k)) if k in rss else ""
                             for k in ks) + "\n")
    with open(os.path.join(logdir, "guests.txt"), "w") as f:
        for g in out.guests:
            t0 = out.guests[0].t_start
            f.write("guest %d pid %d: %s, started t=%.2f\n" % (
                g.k, g.pid, g.status_text(), g.t_start - t0))
            for t, line in g.lines:
                f.write("  t=%.2f %s\n" % (t - t0, line))


def release_times(out, opts):
    """Per guest: seconds from its "idle" line (right after its free) until
    its RSS first fell by 90% of what it freed (peak - ws) from the highest
    RSS sampled for it.  None where that was not seen while sampled."""
    freed = opts.peak - opts.ws
    t0 = out.guests[0].t_start if out.guests else 0
    tend = getattr(out, "measured_t", None)
    res = []
    for g in out.guests:
        if g.t_idle is None:
            continue
        ti = g.t_idle - t0
        seen = [(t, rss[g.k]) for t, _, rss in out.samples
                if g.k in rss and rss[g.k] > 0
                and (tend is None or t <= tend)]
        if not seen:
            continue
        target = max(r for _, r in seen) - 0.9 * freed
        hit = next((max(0.0, t - ti) for t, r in seen
                    if t >= ti - SAMPLE_S and r <= target), None)
        res.append((g.k, hit))
    return res


def pressure_story(out, opts, log, nlast=30):
    """The last seconds before the first death: cgroup usage and the RSS
    of the guests with the most memory, one line per sample."""
    dead = [g for g in out.guests if g.proc.returncode not in (None, 0)
            and g.proc.returncode < 0 and g.proc.returncode != -signal.SIGTERM]
    if not dead or not out.samples:
        return
    # time of death: the first sample where a dead guest no longer has RSS
    last = {}
    tdeath = None
    for t, u, rss in out.samples:
        for g in dead:
            if g.k in last and g.k not in rss and tdeath is None:
                tdeath = t
        last = rss
    if tdeath is None:
        return
    lines = [(t, u, rss) for t, u, rss in out.samples
             if tdeath - 3.0 <= t <= tdeath + 0.5]
    newest = max(g.k for g in out.guests)
    log("    timeline around the OOM kill (t=%.1fs; cgroup usage, newest "
        "guest %d, and the 4 other guests with most RSS, MiB):"
        % (tdeath, newest))
    for t, u, rss in lines[-nlast:]:
        others = sorted(((r, k) for k, r in rss.items() if k != newest),
                        reverse=True)[:4]
        log("      t=%6.2f  cgroup %5s  g%d %5s  %s" % (
            t, mib(u), newest, mib(rss.get(newest)),
            "  ".join("g%d %s" % (k, mib(r)) for r, k in others)))


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def render(headers, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] +
                     [line(r) for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--builddir", default="build")
    ap.add_argument("--prezero", default=None,
                    help="libprezero.so (default BUILDDIR/src/libprezero.so)")
    ap.add_argument("--quick", action="store_true",
                    help="budget 3G, peak 768M, max 20 guests")
    ap.add_argument("--budget", default=None, help="cgroup limit (6G)")
    ap.add_argument("--peak", default=None, help="guest peak (1536M)")
    ap.add_argument("--ws", default="128M", help="guest working set (128M)")
    ap.add_argument("--block", default="64M", help="peak block size (64M)")
    ap.add_argument("--wsblock", default="1M",
                    help="working-set block size, or a comma-separated list "
                         "of sizes used in turn, e.g. 64K,256K,1M,4M (1M)")
    ap.add_argument("--small", default="8M",
                    help="part of the working set in 16 B-4 KiB objects (8M)")
    ap.add_argument("--hold-ms", type=int, default=500)
    ap.add_argument("--period-ms", type=int, default=200)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds between one guest's idle and the next "
                         "guest's start (3)")
    ap.add_argument("--max", type=int, default=None,
                    help="most guests per allocator (40; 20 with --quick)")
    ap.add_argument("--idle-timeout", type=int, default=60)
    ap.add_argument("--final-wait", type=float, default=11.0,
                    help="after the last guest, wait this long and measure "
                         "RSS again (11 s: past prezero's 10 s retain time)")
    ap.add_argument("--allocators", default=",".join(DEFAULT_ORDER))
    ap.add_argument("--logdir", default=None,
                    help="keep samples, guest output and dmesg here")
    opts = ap.parse_args()

    opts.budget = parse_size(opts.budget or ("3G" if opts.quick else "6G"))
    opts.peak = parse_size(opts.peak or ("768M" if opts.quick else "1536M"))
    opts.max = opts.max or (20 if opts.quick else 40)
    opts.ws = parse_size(opts.ws)
    opts.block = parse_size(opts.block)
    opts.wsblock_list = [parse_size(x) for x in opts.wsblock.split(",")]
    opts.small = parse_size(opts.small)

    if os.geteuid() != 0:
        sys.exit("guests.py: needs root (it creates memory cgroups)")
    builddir = os.path.abspath(opts.builddir)
    exe = os.path.join(builddir, "bench", "bench-guests")
    if not os.path.exists(exe):
        sys.exit("guests.py: %s not built (ninja -C %s)" % (exe, builddir))
    pzlib = os.path.abspath(opts.prezero or
                            os.path.join(builddir, "src", "libprezero.so"))

    names = [a.strip() for a in opts.allocators.split(",") if a.strip()]
    for n in names:
        if n not in VARIANTS:
            sys.exit("guests.py: unknown allocator %r (known: %s)"
                     % (n, ", ".join(VARIANTS)))

    t_all = time.monotonic()
    logroot = opts.logdir or tempfile.mkdtemp(prefix="prezero-guests-")
    os.makedirs(logroot, exist_ok=True)
    # A private copy of the libraries under test: a rebuild of prezero while
    # the benchmark runs must not change the library halfway through.
    libdir = tempfile.mkdtemp(prefix="prezero-guests-lib-")
    libs = dict(PEER_LIBS)
    if os.path.exists(pzlib):
        libs["prezero"] = os.path.join(libdir, "libprezero.so")
        shutil.copy2(pzlib, libs["prezero"])
    else:
        libs["prezero"] = None

    def log(s=""):
        print(s, flush=True)

    swaps = subprocess.run(["swapon", "--show", "--noheadings"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                           ).stdout.decode().strip()
    meminfo = read_text("/proc/meminfo") or ""
    memtotal = next((int(l.split()[1]) * KIB for l in meminfo.splitlines()
                     if l.startswith("MemTotal:")), 0)
    thp = (read_text("/sys/kernel/mm/transparent_hugepage/enabled")
           or "?").strip()
    log("guests: budget %s MiB, peak %s MiB, working set %s MiB "
        "(%s MiB in %s KiB blocks, %s MiB small objects), settle %.1f s, "
        "max %d guests"
        % (mib(opts.budget), mib(opts.peak), mib(opts.ws),
           mib(opts.ws - opts.small),
           ",".join(str(x // KIB) for x in opts.wsblock_list),
           mib(opts.small),
           opts.settle, opts.max))
    log("machine: %d CPUs, MemTotal %s MiB, THP %s, swap: %s"
        % (os.cpu_count(), mib(memtotal), thp, swaps or "none"))
    if libs["prezero"]:
        with open(libs["prezero"], "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        head = subprocess.run(
            ["git", "-C", os.path.dirname(os.path.abspath(__file__)),
             "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL).stdout.decode().strip()
        log("prezero: %s, built %s, sha256 %s, source %s (run from a copy)"
            % (pzlib, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(
                os.path.getmtime(pzlib))), digest, head or "?"))
    log("logs: %s" % logroot)

    outcomes = []
    skipped = []
    for n in names:
        key, extra = VARIANTS[n]
        lib = libs[key]
        if key != "glibc" and (lib is None or not os.path.exists(lib)):
            skipped.append(n)
            log("  %s: library missing, skipped%s" % (
                n, "" if key == "prezero" else
                " (apt-get install %s)" % APT_PACKAGES))
            continue
        log("\n-- %s%s" % (n, ("  (" + " ".join("%s=%s" % kv for kv in
                                                 sorted(extra.items())) + ")")
                           if extra else ""))
        o = run_allocator(n, lib, extra, opts, exe, logroot, log)
        outcomes.append(o)
        log("  %s: %d guest(s) fit; stopped: %s; %.0f s; cgroup %s%s"
            % (n, o.fit, o.reason, o.wall,
               "removed" if o.removed else "NOT removed: " + o.cgroup,
               "" if o.memsw else " (no memsw limit)"))
        log("    cgroup: failcnt %s, peak usage %s MiB, oom_control %s"
            % (o.failcnt, mib(o.peak_usage),
               " ".join("%s=%s" % kv for kv in sorted(o.events.items()))))
        if o.dmesg:
            log("    dmesg: " + "\n    dmesg: ".join(o.dmesg[-6:]))
        elif o.dmesg is None:
            log("    dmesg: not readable")
        rt = [t for _, t in o.release_s]
        done = sorted(t for t in rt if t is not None)
        if rt:
            log("    RSS back to the working set after idle: %d of %d guests,"
                " median %s s, max %s s" % (
                    len(done), len(rt),
                    "%.1f" % statistics.median(done) if done else "-",
                    "%.1f" % done[-1] if done else "-"))
        if o.pz:
            log("    prezero stats (%d guests printed): pressure events %d, "
                "idle memory released %s MiB"
                % (o.pz["guests"], o.pz["pressure_events"],
                   mib(o.pz["released"])))
        pressure_story(o, opts, log)

    # the table
    best_peer = max((o.fit for o in outcomes if o.name in PEERS), default=0)
    rows = []
    for o in outcomes:
        rt = [t for _, t in o.release_s if t is not None]
        rows.append([
            o.name, str(o.fit),
            "-" if o.gibps is None else "%.2f" % o.gibps,
            mib(o.rss_end), mib(o.usage_end),
            mib(o.rss_final), "%.1f" % statistics.median(rt) if rt else "-",
            "-" if not best_peer else "%.2f" % (o.fit / best_peer),
            o.reason])
    log("\n== guests in %s MiB (peak %s MiB, working set %s MiB, settle "
        "%.1f s, max %d) ==" % (mib(opts.budget), mib(opts.peak),
                                mib(opts.ws), opts.settle, opts.max))
    log(render(["allocator", "guests", "GiB/s", "idle RSS MiB",
                "cgroup MiB", "RSS +%.0fs" % opts.final_wait, "release s",
                "x best peer", "stopped by"], rows))
    log("guests: alive and idle at the end.  GiB/s: median calloc+touch rate "
        "of the peaks.  idle RSS: sum of the live guests' VmRSS when the run "
        "stopped (cgroup: the cgroup's usage then); RSS +%.0fs: the same "
        "sum %.0f s later.  release s: median time from a guest's free to its "
        "RSS falling by 90%% of what it freed ('-': not seen).  x best peer: guests / the "
        "most guests of glibc, jemalloc, tcmalloc, mimalloc."
        % (opts.final_wait, opts.final_wait))
    if skipped:
        log("skipped (library missing): %s" % ", ".join(skipped))
    log("total %.0f s" % (time.monotonic() - t_all))
    shutil.rmtree(libdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
