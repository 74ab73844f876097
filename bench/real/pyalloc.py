"""bench/real/pyalloc.py: the python3 real-program workload of bench/run.py.

Run with Debian's interpreter: /usr/bin/python3 bench/real/pyalloc.py [rounds]

Allocation-heavy and deterministic, like a web or data-processing service:
records built as dicts (many with more than 8 keys, so their tables come
from malloc, not pymalloc), lists grown by append, strings and bytes of 16 B
to 8 KiB built, joined and split, a cache of small objects with random
evictions, a json round trip, sorts.  pymalloc serves objects up to 512 B
from its arenas; everything larger (dict and list storage, long strings,
bytes) goes to malloc/realloc/free.  Prints "ok <digest> ..." as its last
line; the digest does not depend on the allocator.
"""
import hashlib
import json
import random
import sys

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
rng = random.Random(20261203)
digest = hashlib.sha256()


def feed(*parts):
    for p in parts:
        digest.update(p if isinstance(p, bytes) else str(p).encode())


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
         "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho"]


class Node:
    __slots__ = ("key", "value", "children")

    def __init__(self, key, value):
        self.key = key
        self.value = value
        self.children = []


def make_record(i):
    n = 4 + i % 14  # 4..17 fields: small and malloc'd dict tables
    rec = {"id": i, "name": "user-%d-%s" % (i, WORDS[i % len(WORDS)])}
    for f in range(n):
        k = "f%d" % f
        r = rng.random()
        if r < 0.4:
            rec[k] = rng.randrange(1 << 30)
        elif r < 0.7:
            rec[k] = WORDS[rng.randrange(len(WORDS))] * (1 + rng.randrange(40))
        elif r < 0.9:
            rec[k] = [rng.randrange(1000) for _ in range(rng.randrange(1, 60))]
        else:
            rec[k] = {"x": rng.random(), "tags": WORDS[: 1 + rng.randrange(8)]}
    return rec


def one_round(r):
    # 1. build many records, keep two in three
    recs = [make_record(r * 100000 + i) for i in range(40000)]
    keep = [x for x in recs if x["id"] % 3 != 0]
    del recs
    # 2. an index: lists grown by append
    index = {}
    for x in keep:
        index.setdefault(x["name"][-4:], []).append(x["id"])
        index.setdefault(len(x), []).append(x["id"])
    feed(len(keep), sorted((str(k), len(v)) for k, v in index.items()))
    # 3. strings: format, join, split, bytes of many sizes
    lines = []
    for x in keep[::2]:
        lines.append("&".join(["%s=%s" % (k, v) for k, v in x.items()]))
    text = "\n".join(lines)
    blobs = [text[i:i + 16 + (i * 7919) % 8192].encode()
             for i in range(0, len(text), 997)]
    feed(len(text), sum(len(b) for b in blobs),
         hashlib.md5(b"".join(blobs[::50])).hexdigest())
    back = [dict(p.split("=", 1) for p in ln.split("&")) for ln in lines[:8000]]
    feed(sum(len(d) for d in back))
    del text, blobs, back, lines
    # 4. a cache of small objects with random evictions, and a tree
    cache = {}
    root = Node("root", 0)
    for i in range(120000):
        k = rng.randrange(30000)
        if k in cache and rng.random() < 0.5:
            del cache[k]
        else:
            n = Node(k, (i, str(k)))
            cache[k] = n
            if i % 8 == 0:
                root.children.append(n)
    feed(len(cache), len(root.children),
         sum(cache[k].value[0] for k in list(cache)[:1000]))
    # 5. json round trip of a slice
    doc = json.dumps(keep[:6000], sort_keys=True)
    again = json.loads(doc)
    feed(len(doc), len(again), again[-1]["id"])
    # 6. sorts of tuples
    rows = sorted(((x["id"] % 977, x["name"], len(x)) for x in keep),
                  reverse=r % 2 == 0)
    feed(rows[0], rows[-1], rows[len(rows) // 2])
    return len(keep)


total = 0
for r in range(ROUNDS):
    total += one_round(r)
print("ok %s rounds=%d records=%d" % (digest.hexdigest()[:16], ROUNDS, total))
