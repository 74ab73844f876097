#!/usr/bin/env bash
# A slice of python3's own regression tests (python3 -m test) under the
# preload: json, re, dict, list, set, collections, heapq, struct, array,
# bytes, zlib, hashlib, gc, weakref, pickle, threading, mmap, subprocess
# (two workers: fork and exec of more interpreters). The interpreter must
# report "Tests result: SUCCESS" with the preload as it does without it.
# Needs the interpreter's test package (Debian: libpython3.11-testsuite).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"

py=
for cand in /usr/bin/python3 "$(command -v python3 2>/dev/null || true)"; do
  [ -n "$cand" ] && [ -x "$cand" ] || continue
  if env -u LD_PRELOAD "$cand" -c 'import test.test_json, test.libregrtest' >/dev/null 2>&1; then
    py=$cand
    break
  fi
done
[ -n "$py" ] || pz_skip "no python3 with its regression test suite (Debian: libpython3.11-testsuite)"

tests=(test_json test_re test_dict test_list test_set test_collections test_heapq test_struct test_array
       test_bytes test_zlib test_hashlib test_gc test_weakref test_pickle test_threading test_mmap test_subprocess)
PZ_TIMEOUT=${PZ_TIMEOUT:-240}
for mode in ref pz; do
  pz_exec "$mode" regrtest "$py" -m test -j2 "${tests[@]}" >"regrtest.$mode.out" || true
done
grep -q "Tests result: SUCCESS" regrtest.ref.out ||
  pz_skip "these tests do not pass here even without the preload: $(grep 'Tests result' regrtest.ref.out)"
grep -q "Tests result: SUCCESS" regrtest.pz.out || {
  tail -n 30 regrtest.pz.out >&2
  pz_fail "python3 -m test failed with the preload"
}
pz_pass "${#tests[@]} test modules: $(grep -m1 'Tests result' regrtest.pz.out)"
