#!/usr/bin/env bash
# coreutils sort under the preload: a ~50 MB deterministic file sorted with
# --parallel=2 -S 100M (big buffers, two sorting threads), a keyed numeric
# sort with a small buffer (temporary files and merging), and a unique sort.
# Every result must be byte-identical to the sort run without preload.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd sort awk sha256sum

export LC_ALL=C
mkdir -p tmp.ref tmp.pz

# ~50 MB: 800k lines of 3-5 pseudo-random fields (made without preload).
awk 'BEGIN {
  x = 42
  for (i = 0; i < 800000; i++) {
    x = (x * 1103515245 + 12345) % 2147483648
    y = (x * 69069 + 1) % 4294967296
    printf("%08x,%d,%s-%d,%.3f,", x, y % 100000, substr("alphabetagammadeltaepsilonzetaeta", x % 20 + 1, 4 + y % 9), i % 977, (y % 1000000) / 7)
    printf("%s\n", substr("the quick brown fox jumps over the lazy dog 0123456789", (x % 17) + 1, 10 + y % 30))
  }
}' >input.txt
size=$(wc -c <input.txt)
[ "$size" -gt 40000000 ] || pz_fail "generated input is only $size bytes"

run_sort() {  # run_sort LABEL OUTFILE SORT-ARGS...
  local label=$1 out=$2
  shift 2
  pz_ref "$label" sort -T tmp.ref "$@" -o "$out.ref" input.txt
  pz_run "$label" sort -T tmp.pz "$@" -o "$out.pz" input.txt
  env -u LD_PRELOAD sort -c "$@" "$out.ref" 2>/dev/null ||
    pz_fail "reference sort output ($label) is not sorted?"
  if [ "$(pz_sha "$out.ref")" != "$(pz_sha "$out.pz")" ]; then
    pz_compare_files "sort $* output" "$out.ref" "$out.pz"
  fi
}

run_sort plain sorted --parallel=2 -S 100M
[ "$(wc -l <sorted.pz)" -eq 800000 ] || pz_fail "sorted output has $(wc -l <sorted.pz) lines, not 800000"
run_sort keyed keyed --parallel=2 -S 4M -t, -k2,2n -k4,4r -k1,1
run_sort uniq uniq -u -t, -k3,3 -S 20M --parallel=2
# A general numeric (strtold) sort on a slice, stable, reversed.
head -n 200000 input.txt >input.txt.tmp && mv input.txt.tmp input.txt
run_sort general general -s -t, -k5,5gr --parallel=2

pz_pass "$size bytes sorted four ways, sha256 $(pz_sha sorted.pz | cut -c1-16)"
