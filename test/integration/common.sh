# Shared helpers for the prezero integration tests. Sourced (not run) by each
# test script, right after `set -euo pipefail`, with the script's own "$@":
#
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
#
# Contract of every test script:
#   $1      absolute (or relative) path of the preload library (.so)
#   exit 0  pass, 1 fail (what differed is printed), 77 skip (reason printed)
#
# Knobs (environment, all optional):
#   PZ_TIMEOUT=N     seconds one program run may take before it is called
#                    hung (default 90)
#   PZ_KEEP_WORK=1   keep the scratch directory instead of deleting it
#
# Any PREZERO_* variables in the environment reach the preloaded runs
# unchanged (they are also seen by the reference runs, which ignore them).

PZ_NAME="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

# ---- reporting -------------------------------------------------------------

pz_note() { echo "[$PZ_NAME] $*" >&2; }

pz_skip() {
  echo "SKIP [$PZ_NAME]: $*"
  exit 77
}

pz_fail() {
  echo "FAIL [$PZ_NAME]: $*" >&2
  exit 1
}

pz_pass() {
  echo "PASS [$PZ_NAME]${1:+: $*}"
  exit 0
}

# pz_require_cmd CMD...: skip the test unless every CMD is on PATH.
pz_require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || pz_skip "'$c' is not installed (not on PATH)"
  done
}

# ---- the library under test -----------------------------------------------

[ $# -ge 1 ] && [ -n "${1:-}" ] ||
  pz_fail "usage: $0 /path/to/libprezero.so (no preload library given)"
[ -f "$1" ] || pz_fail "preload library '$1' does not exist"
PZ_LIB="$(readlink -f -- "$1")"   # absolute, symlinks resolved (as in /proc/PID/maps)

# A library whose malloc is not an exported dynamic symbol would be loaded
# and do nothing: every test would then pass without testing anything.
if command -v nm >/dev/null 2>&1; then
  pz_syms="$(nm -D --defined-only -- "$PZ_LIB" 2>/dev/null | awk '{print $NF}')" || true
  for pz_s in malloc free calloc realloc; do
    grep -qx -- "$pz_s" <<<"$pz_syms" ||
      pz_fail "$PZ_LIB does not export '$pz_s': preloading it would not replace the allocator"
  done
  unset pz_syms pz_s
fi

# When ld.so cannot preload a library it prints an error and carries on
# without it; make sure the library really ends up mapped in a process.
pz_maps="$(mktemp)"
LD_PRELOAD="$PZ_LIB" cat /proc/self/maps >"$pz_maps" 2>&1 || true
if ! grep -qF -- "$PZ_LIB" "$pz_maps"; then
  grep -v '^[0-9a-f]*-[0-9a-f]* ' "$pz_maps" >&2 || true
  rm -f "$pz_maps"
  pz_fail "$PZ_LIB is not mapped into a process started with LD_PRELOAD=$PZ_LIB"
fi
rm -f "$pz_maps"
unset pz_maps

# ---- scratch directory -----------------------------------------------------

PZ_WORK="$(mktemp -d "${TMPDIR:-/tmp}/prezero-it-$PZ_NAME.XXXXXX")"
pz_cleanup() {
  local rc=$?
  if [ "${PZ_KEEP_WORK:-0}" = 1 ]; then
    echo "[$PZ_NAME] scratch directory kept: $PZ_WORK" >&2
  else
    rm -rf -- "$PZ_WORK"
  fi
  exit "$rc"
}
trap pz_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$PZ_WORK" || pz_fail "cannot enter $PZ_WORK"

# ---- running programs -------------------------------------------------------

# pz_describe_rc RC: human description of an exit status.
pz_describe_rc() {
  local rc=$1
  if [ "$rc" -eq 124 ]; then
    echo "timed out after ${PZ_TIMEOUT:-90}s (hang or deadlock?)"
  elif [ "$rc" -gt 128 ]; then
    local sig
    sig="$(kill -l $((rc - 128)) 2>/dev/null || echo "?")"
    echo "killed by signal $((rc - 128)) (SIG$sig)"
  else
    echo "exit status $rc"
  fi
}

# pz_exec MODE LABEL CMD [ARG...]
#   MODE is 'pz' (run with LD_PRELOAD=$PZ_LIB) or 'ref' (without any preload).
#   stdout goes where the caller sends it; stderr is saved in
#   $PZ_WORK/LABEL.MODE.err. A failing, crashing or hanging command makes the
#   test fail, showing its stderr. In 'pz' mode PZ_EXPECT_LIB is set to the
#   library path so that a program may check that it is mapped.
pz_exec() {
  local mode=$1 label=$2
  shift 2
  local err="$PZ_WORK/$label.$mode.err" rc=0
  local -a envargs
  case "$mode" in
    pz) envargs=(env "LD_PRELOAD=$PZ_LIB" "PZ_EXPECT_LIB=$PZ_LIB") ;;
    ref) envargs=(env -u LD_PRELOAD -u PZ_EXPECT_LIB) ;;
    *) pz_fail "internal: pz_exec mode '$mode'" ;;
  esac
  timeout -k 5 "${PZ_TIMEOUT:-90}" "${envargs[@]}" "$@" 2>"$err" || rc=$?
  if [ "$mode" = pz ] && grep -q "cannot be preloaded" "$err"; then
    sed 's/^/    /' "$err" | tail -n 40 >&2
    pz_fail "[$label] the preload library was not loaded"
  fi
  if [ "$rc" -ne 0 ]; then
    echo "FAIL [$PZ_NAME]: [$label] $mode run of '$*' failed: $(pz_describe_rc "$rc")" >&2
    if [ -s "$err" ]; then
      echo "---- stderr (last 60 lines) ----" >&2
      tail -n 60 "$err" >&2
      echo "--------------------------------" >&2
    fi
    [ "$mode" = pz ] && echo "    (with LD_PRELOAD=$PZ_LIB)" >&2
    exit 1
  fi
  return 0
}

# Shorthands.
pz_run() { pz_exec pz "$@"; }
pz_ref() { pz_exec ref "$@"; }

# pz_compare_files WHAT EXPECTED ACTUAL: fail, showing a diff, unless equal.
pz_compare_files() {
  local what=$1 exp=$2 act=$3
  if ! cmp -s -- "$exp" "$act"; then
    echo "FAIL [$PZ_NAME]: $what differs with the preload" >&2
    echo "  expected:           $exp ($(wc -c <"$exp") bytes)" >&2
    echo "  actual (preloaded): $act ($(wc -c <"$act") bytes)" >&2
    if LC_ALL=C grep -qI . "$exp" 2>/dev/null || [ ! -s "$exp" ]; then
      echo "---- diff expected actual (first 40 lines) ----" >&2
      diff -- "$exp" "$act" | head -n 40 >&2 || true
    else
      echo "  (binary) first difference: $(cmp -- "$exp" "$act" 2>&1 | head -n 1)" >&2
    fi
    exit 1
  fi
}

# pz_compare_str WHAT EXPECTED ACTUAL: fail unless the two strings are equal.
pz_compare_str() {
  local what=$1 exp=$2 act=$3
  if [ "$exp" != "$act" ]; then
    echo "FAIL [$PZ_NAME]: $what: expected '$exp', got '$act'" >&2
    exit 1
  fi
}

# pz_sha FILE: sha256 of FILE (computed without preload).
pz_sha() { env -u LD_PRELOAD sha256sum -- "$1" | cut -d' ' -f1; }

