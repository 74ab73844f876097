#!/usr/bin/env bash
# Checks the integration tests themselves: builds broken-alloc.c (a malloc
# with an injectable bug) and runs tests with it, expecting them to PASS
# with no bug injected and to FAIL with each bug. Takes a few minutes.
#   test/integration/selftest.sh
# Not registered with meson; needs gcc.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
command -v gcc >/dev/null || { echo "SKIP: gcc not installed"; exit 77; }
gcc -O2 -shared -fPIC -Wall -o "$tmp/libbroken.so" "$here/broken-alloc.c" || exit 1
echo 'not a library' >"$tmp/notalib.so"
bad=0

expect() {  # expect pass|fail MODE-ENV... -- TEST...
  local want=$1; shift
  local -a envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local t rc
  for t in "$@"; do
    env "${envs[@]}" bash "$here/$t.sh" "$tmp/libbroken.so" >"$tmp/log" 2>&1
    rc=$?
    if { [ "$want" = pass ] && [ $rc -eq 0 ]; } || { [ "$want" = fail ] && [ $rc -eq 1 ]; }; then
      printf 'ok      %-40s %-8s rc=%d  %s\n' "${envs[*]}" "$t" "$rc" "$(grep -m1 -E '^(FAIL|ERROR|PASS)' "$tmp/log" | cut -c1-90)"
    else
      printf 'WRONG   %-40s %-8s rc=%d (wanted %s)\n' "${envs[*]}" "$t" "$rc" "$want"
      sed 's/^/    | /' "$tmp/log" | tail -n 20
      bad=1
    fi
  done
}

expect pass BAD_MODE=none -- python3 gcc git sort make threads sqlite cxx
expect fail BAD_MODE=calloc_dirty BAD_MIN=1000000 -- python3 threads
expect fail BAD_MODE=calloc_dirty -- python3 gcc git make threads
expect fail BAD_MODE=calloc_dirty_small -- python3 gcc git sort make threads cxx
expect fail BAD_MODE=realloc_trunc -- python3 gcc threads
expect fail BAD_MODE=misalign -- threads cxx
expect fail BAD_MODE=forklock -- threads
# A library that cannot be preloaded must fail every test, not pass it.
bash "$here/sort.sh" "$tmp/notalib.so" >"$tmp/log" 2>&1
rc=$?
if [ $rc -eq 1 ]; then echo "ok      non-library                              sort     rc=1"; else echo "WRONG   non-library sort rc=$rc"; bad=1; fi
[ $bad -eq 0 ] && echo "selftest: all as expected" || echo "selftest: SOME TESTS DID NOT BEHAVE AS EXPECTED"
exit $bad
