#!/usr/bin/python3
"""fastpath: instructions per small malloc and per free, per allocator.

Runs bench-fastpath under valgrind --tool=callgrind (which, unlike
memcheck, leaves malloc to the preloaded allocator) twice per allocator:
once counting only fastpath_mallocs, once only fastpath_frees, and divides
the instructions by the calls. Warm thread cache: each round reuses the
previous round's blocks. Instruction counts do not depend on machine load.

    /usr/bin/python3 bench/fastpath.py --builddir build [--size 32]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = [("glibc", None),
         ("jemalloc", LIBDIR + "/libjemalloc.so.2"),
         ("tcmalloc", LIBDIR + "/libtcmalloc_minimal.so.4"),
         ("mimalloc", LIBDIR + "/libmimalloc.so.2")]


def count(exe, lib, fn, size, rounds, batch):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        env = dict(os.environ)
        if lib:
            env["LD_PRELOAD"] = lib
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
               "--toggle-collect=" + fn, exe, "size=%d" % size,
               "rounds=%d" % rounds, "batch=%d" % batch]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr[-500:]))
        with open(out) as f:
            for line in f:
                m = re.match(r"summary:\s+(\d+)", line) or re.match(r"totals:\s+(\d+)", line)
                if m:
                    return int(m.group(1))
    raise RuntimeError("no totals in callgrind output")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builddir", default="build")
    ap.add_argument("--prezero", default=None)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    opts = ap.parse_args()
    exe = os.path.join(opts.builddir, "bench", "bench-fastpath")
    pz = opts.prezero or os.path.join(opts.builddir, "src", "libprezero.so")
    calls = opts.rounds * opts.batch
    print("fast path, %d-byte blocks, warm thread cache, instructions per call (callgrind):"
          % opts.size)
    print("%-10s %8s %8s %8s" % ("allocator", "malloc", "free", "pair"))
    for name, lib in PEERS + [("prezero", os.path.abspath(pz))]:
        if lib and not os.path.exists(lib):
            print("%-10s skipped: %s not found" % (name, lib))
            continue
        m = count(exe, lib, "fastpath_mallocs", opts.size, opts.rounds, opts.batch) / calls
        f = count(exe, lib, "fastpath_frees", opts.size, opts.rounds, opts.batch) / calls
        print("%-10s %8.1f %8.1f %8.1f" % (name, m, f, m + f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
