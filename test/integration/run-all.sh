#!/usr/bin/env bash
# Run every integration test by hand against a preload library, e.g.
#   test/integration/run-all.sh build/src/libprezero.so
#   test/integration/run-all.sh /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
# Optional further arguments name the tests to run (python3 gcc git ...).
# Prints one line per test with its result and time; the failing tests'
# output is shown. Exits 1 if any test failed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 /path/to/lib.so [test...]" >&2; exit 2; }
lib="$(readlink -f -- "$1")"
shift
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(python3 gcc git sort make threads sqlite cxx)
failed=0
for t in "${tests[@]}"; do
  log="$(mktemp)"
  start=$(date +%s.%N)
  bash "$here/$t.sh" "$lib" >"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf("%.1f", b - a) }')
  case $rc in
    0) res=PASS ;;
    77) res=SKIP ;;
    *) res="FAIL(rc=$rc)"; failed=1 ;;
  esac
  summary="$(grep -m1 -E '^(PASS|SKIP|FAIL) \[' "$log" || tail -n 1 "$log")"
  printf '%-8s %-12s %6ss  %s\n' "$t" "$res" "$secs" "$(cut -c1-110 <<<"$summary")"
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then sed 's/^/    | /' "$log"; fi
  rm -f "$log"
done
exit $failed
