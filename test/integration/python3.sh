#!/usr/bin/env bash
# python3 under the preload: a few hundred thousand objects (dicts, lists,
# strings), a json round trip, regular expressions, sorting, hashlib and
# zlib, big calloc'd buffers that must read as zero, threads handing objects
# to each other, and a fork-based multiprocessing Pool of 2. The printed
# digests must equal those of the same interpreter run without the preload.
# Every distinct python3 found (the one on PATH and /usr/bin/python3) is run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"

# Distinct interpreters, by the real executable behind them (this resolves a
# pyenv shim to the interpreter itself).
declare -a PYS=()
declare -A SEEN=()
for cand in "$(command -v python3 2>/dev/null || true)" /usr/bin/python3; do
  [ -n "$cand" ] && [ -x "$cand" ] || continue
  exe="$(env -u LD_PRELOAD "$cand" -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null)" || continue
  [ -n "$exe" ] && [ -x "$exe" ] || continue
  [ -n "${SEEN[$exe]:-}" ] && continue
  SEEN[$exe]=1
  PYS+=("$exe")
done
[ "${#PYS[@]}" -gt 0 ] || pz_skip "no working python3 interpreter found"

cat >workload.py <<'PYEOF'
import gc
import hashlib
import json
import os
import random
import re
import sys
import threading
import zlib
import queue
from concurrent.futures import ThreadPoolExecutor
import multiprocessing as mp

EXPECT = os.environ.get("PZ_EXPECT_LIB", "")


def check_mapped(where):
    """Under the preload the library must be mapped into this process."""
    if not EXPECT:
        return
    with open("/proc/self/maps") as f:
        if EXPECT not in f.read():
            raise SystemExit("preload library %s not mapped in %s (pid %d)"
                             % (EXPECT, where, os.getpid()))


def h(*parts):
    m = hashlib.sha256()
    for p in parts:
        m.update(p if isinstance(p, bytes) else str(p).encode())
    return m.hexdigest()[:24]


out = []


def emit(tag, value):
    line = "%s: %s" % (tag, value)
    out.append(line)
    print(line, flush=True)


check_mapped("main")
rng = random.Random(20240611)

# 1. A big dict of mixed objects (~300k entries, ~1M objects).
N = 300_000
d = {}
for i in range(N):
    k = "key-%07d-%x" % (i, rng.getrandbits(30))
    if i % 3 == 0:
        d[k] = [i, str(i * 7), (i, i * i), {"v": i % 97, "s": k[-5:]}]
    elif i % 3 == 1:
        d[k] = k[::-1] * (1 + i % 5)
    else:
        d[k] = float(i) / 7.0
emit("dict.len", len(d))
emit("dict.digest", h(*(f"{k}={v!r};" for k, v in d.items())))

# Delete every other entry and grow it again: lots of frees and reuse.
for idx, k in enumerate(list(d.keys())):
    if idx % 2:
        del d[k]
for i in range(N // 2):
    d["new-%d" % i] = bytes([i % 251]) * (i % 300)
emit("dict.regrow", h(len(d), sum(len(v) if isinstance(v, (bytes, str)) else 1 for v in d.values())))

# 2. json round trip.
sub = {k: v for idx, (k, v) in enumerate(d.items()) if idx % 3 == 0 and not isinstance(v, bytes)}
text = json.dumps(sub, sort_keys=True)
back = json.loads(text)
text2 = json.dumps(back, sort_keys=True)
if text != text2:
    raise SystemExit("json round trip changed the document")
emit("json.len", len(text))
emit("json.digest", h(text.encode()))

# 3. Regular expressions.
pat = re.compile(r'"(key-(\d{7})-([0-9a-f]+))"')
found = pat.findall(text)
emit("re.findall", "%d %s" % (len(found), h(*(m[1] + m[2] for m in found))))
replaced = re.sub(r"\d+", lambda m: str(len(m.group(0))), text[:2_000_000])
emit("re.sub", h(replaced.encode()))
words = re.split(r"[^a-z]+", text[:1_000_000])
emit("re.split", "%d %s" % (len(words), h(" ".join(words).encode())))

# 4. Sorting.
nums = [rng.random() for _ in range(400_000)]
nums.sort()
ints = sorted((rng.getrandbits(40) for _ in range(200_000)), reverse=True)
keys = sorted(d.keys(), key=lambda s: (s[::-1], len(s)))
emit("sort", h(repr(nums[::997]), repr(ints[::991]), "".join(keys[::89])))
tuples = sorted(((i % 1000, str(i), -i) for i in range(200_000)))
emit("sort.tuples", h(repr(tuples[::1009])))

# 5. hashlib and zlib over a few tens of MB.
blob = rng.randbytes(8 << 20)
text_blob = text.encode() * 3
emit("hash.sha256", hashlib.sha256(blob).hexdigest())
emit("hash.md5", hashlib.md5(text_blob).hexdigest())
emit("hash.blake2b", hashlib.blake2b(blob + text_blob).hexdigest()[:32])
comp = zlib.compress(text_blob, 6)
if zlib.decompress(comp) != text_blob:
    raise SystemExit("zlib round trip failed")
emit("zlib", "%d %s" % (len(comp), h(comp)))

# 6. Big zero-filled buffers (bytes(n) is calloc) after dirtying the heap
#    with big non-zero buffers of the same sizes.
for rnd in range(4):
    sizes = [(1 << 20) * (1 + rnd), (3 << 20) + 4096 * rnd, (17 << 20) - 3 * rnd]
    dirty = [bytearray(b"\xa5") * s for s in sizes]
    del dirty
    gc.collect()
    for s in sizes:
        z = bytes(s)
        if z.count(0) != s:
            raise SystemExit("bytes(%d) is not all zero (calloc returned dirty memory)" % s)
        del z
emit("calloc.zero", "ok")

# 7. Threads: producers build objects, consumers in other threads check and
#    free them (cross-thread frees), plus a ThreadPoolExecutor map.
q = queue.Queue(maxsize=256)
results = []
lock = threading.Lock()


def producer(tid):
    check_mapped("thread")
    r = random.Random(tid)
    for j in range(20_000):
        obj = {"t": tid, "j": j, "payload": "x" * r.randrange(1, 200), "l": list(range(j % 50))}
        q.put(obj)
    q.put(None)


def consumer():
    done = 0
    n_items = 0
    while True:
        obj = q.get()
        if obj is None:
            done += 1
            if done == 2:  # each consumer stops after two end markers
                break
            continue
        if obj["l"] != list(range(obj["j"] % 50)):
            raise SystemExit("corrupt object from a producer thread")
        if obj["payload"] != "x" * len(obj["payload"]):
            raise SystemExit("corrupt string from a producer thread")
        n_items += 1
    with lock:
        results.append(n_items)


ths = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
ths += [threading.Thread(target=consumer) for _ in range(2)]
for t in ths:
    t.start()
for t in ths:
    t.join()
# The split of items between consumers is nondeterministic; report only that
# everything arrived intact.
emit("threads.queue", "%d consumers, %d items" % (len(results), sum(results)))


def work(n):
    check_mapped("pool thread")
    r = random.Random(n)
    s = [("%08x" % r.getrandbits(32)) * (1 + n % 7) for _ in range(30_000)]
    s.sort()
    m = {x: i for i, x in enumerate(s)}
    return h(len(m), "".join(s[::101]))


with ThreadPoolExecutor(max_workers=4) as ex:
    emit("threads.pool", h(*ex.map(work, range(16))))

# 8. multiprocessing with fork, a Pool of 2 (children inherit the heap).
def proc_work(n):
    check_mapped("forked worker")
    base = sum(len(v) for v in list(d.values())[:2000] if isinstance(v, str))
    return (n, base, work(n + 100))


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        res = pool.map(proc_work, range(12), chunksize=1)
    emit("mp.fork", h(repr(res)))
    emit("summary", h("\n".join(out)))
PYEOF

i=0
for py in "${PYS[@]}"; do
  i=$((i + 1))
  ver="$(env -u LD_PRELOAD "$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  tag="py$i-$ver"
  pz_note "$py (Python $ver)"
  export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
  pz_ref "$tag" "$py" workload.py >"$tag.ref.out"
  pz_run "$tag" "$py" workload.py >"$tag.pz.out"
  grep -q '^summary: ' "$tag.ref.out" || pz_fail "reference run of $py printed no summary"
  pz_compare_files "python $ver workload output" "$tag.ref.out" "$tag.pz.out"
done

pz_pass "${#PYS[@]} interpreter(s): ${PYS[*]}"
