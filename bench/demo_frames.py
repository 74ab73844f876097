"""The demo's real program: python3 building large zeroed buffers, as an
image or data pipeline does (a fresh 64 MiB frame, touched, dropped).
Prints the time per frame; run it with and without LD_PRELOAD=libprezero.so."""
import sys
import time

frames = int(sys.argv[1]) if len(sys.argv) > 1 else 60
size = 64 << 20
ones = b"\x01" * (size // 4096)
best = []
t0 = time.perf_counter()
for _ in range(frames):
    t = time.perf_counter()
    buf = bytearray(size)      # zeroed 64 MiB: malloc + memset inside CPython
    buf[::4096] = ones         # touch every page once
    del buf
    best.append(time.perf_counter() - t)
total = time.perf_counter() - t0
best.sort()
print(f"{frames} frames of 64 MiB: total {total:.3f} s, median frame {best[len(best)//2]*1e3:.2f} ms")
