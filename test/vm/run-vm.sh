#!/usr/bin/env bash
# Run test programs inside the emulated NUMA VM rig (QEMU, Debian's 6.1 kernel):
# the runner of meson's `vm` suite (test/vm/meson.build).
#
#   run-vm.sh [rig options] -- PROGRAM [ARGS...] [:: PROGRAM2 [ARGS...]]...
#
# Rig options (--nodes N, --mem MB, --cpus-per-node K, --append 'ARGS',
# --file PATH, --env VAR=VAL, --timeout S, ...) go to run-in-vm.sh as they are
# (see run-in-vm.sh --help). Several programs separated by `::` run one after
# the other in a single boot (each with stdin /dev/null, its exit status and
# time printed); the first failing status is the result, 77 if all skipped.
# Programs keep their host paths in the guest and bring their shared
# libraries (libprezero.so through the build's RUNPATH) with them.
#
# Exit status: the programs' (0 pass, 77 skip, other fail); 77 with a reason
# when the rig is missing or cannot boot a VM here (rig status 125 before a
# program started: qemu or a kernel could not be installed, the VM died at
# boot); 1 when the VM died while a program ran; 124 on the rig's timeout.
#
# The rig: $PZ_VMRIG if set, else <git top>/../shared/vmtest/run-in-vm.sh,
# else /work/shared/vmtest/run-in-vm.sh.
set -uo pipefail

skip() { echo "run-vm: SKIP: $*"; exit 77; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ -n ${PZ_VMRIG:-} ]]; then
  rig=$PZ_VMRIG
  [[ -f $rig ]] || skip "PZ_VMRIG=$rig does not exist"
else
  rig=""
  top=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null) &&
    [[ -f $top/../shared/vmtest/run-in-vm.sh ]] && rig=$(realpath "$top/../shared/vmtest/run-in-vm.sh")
  [[ -z $rig && -f /work/shared/vmtest/run-in-vm.sh ]] && rig=/work/shared/vmtest/run-in-vm.sh
  [[ -n $rig ]] || skip "no VM rig: neither \$PZ_VMRIG, <git top>/../shared/vmtest/run-in-vm.sh nor /work/shared/vmtest/run-in-vm.sh exists"
fi

# rig options up to `--`
opts=() have_timeout=0
while [[ $# -gt 0 && $1 != -- ]]; do
  [[ $1 == --timeout ]] && have_timeout=1
  opts+=("$1")
  shift
done
[[ ${1:-} == -- ]] || { echo "usage: run-vm.sh [rig options] -- PROGRAM [ARGS...] [:: PROGRAM2 ...]" >&2; exit 2; }
shift
[[ $# -ge 1 ]] || { echo "run-vm.sh: no PROGRAM" >&2; exit 2; }
# the rig's own limit, under meson's 300 s, so a hang ends with the rig's message
[[ $have_timeout == 1 ]] || opts+=(--timeout 270)

tmp=$(mktemp -d /tmp/pzvm.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT

# shell-quote one word for the guest's /bin/sh (busybox ash)
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# the guest script: each command in turn, its status and time
seq=$tmp/run.sh
{
  echo '#!/bin/sh'
  echo 'rc=0 ran=0 skipped=0 failed='
  echo 'up() { cut -d" " -f1 /proc/uptime; }'
  echo 'run() {'
  echo '  t=$(up); echo "run-vm: >>> $*"'
  echo '  "$@" </dev/null; r=$?'
  echo '  echo "run-vm: <<< exit $r after $(awk -v a="$t" -v b="$(up)" "BEGIN { printf \"%.2f\", b - a }") s: $*"'
  echo '  ran=$((ran + 1)); [ $r -eq 77 ] && skipped=$((skipped + 1))'
  echo '  [ $r -ne 0 ] && [ $r -ne 77 ] && failed="$failed  exit $r: $*
"'
  echo '  [ $r -ne 0 ] && [ $r -ne 77 ] && [ $rc -eq 0 ] && rc=$r'
  echo '}'
} >"$seq"
files=()
cmd=()
flush() {
  [[ ${#cmd[@]} -gt 0 ]] || { echo "run-vm.sh: empty command around '::'" >&2; exit 2; }
  local prog=${cmd[0]} p
  if [[ $prog != */* ]]; then p=$(type -P "$prog") || { echo "run-vm.sh: not found: $prog" >&2; exit 2; }; prog=$p; fi
  [[ -f $prog ]] || { echo "run-vm.sh: no such program: $prog (built?)" >&2; exit 2; }
  prog=$(realpath "$prog")
  files+=(--file "$prog")
  printf 'run %s' "$(q "$prog")" >>"$seq"
  for a in "${cmd[@]:1}"; do printf ' %s' "$(q "$a")" >>"$seq"; done
  echo >>"$seq"
  cmd=()
}
for a in "$@"; do
  if [[ $a == :: ]]; then flush; else cmd+=("$a"); fi
done
flush
# the failures again at the end: meson shows only a log's last 100 lines
echo '[ -n "$failed" ] && printf "run-vm: failed:\n%s" "$failed"' >>"$seq"
echo '[ $rc -ne 0 ] && exit $rc; [ $ran -gt 0 ] && [ $skipped -eq $ran ] && exit 77; exit 0' >>"$seq"
chmod +x "$seq"

t0=${EPOCHREALTIME/[.,]/}
# stdout streams through; the rig's stderr is shown and kept to tell a boot failure from a test failure
exec 3>&1
bash "$rig" "${opts[@]}" "${files[@]}" -- "$seq" 2>&1 1>&3 3>&- | tee "$tmp/rig.err" >&2
rc=${PIPESTATUS[0]}
t1=${EPOCHREALTIME/[.,]/}
d=$((t1 - t0))
printf 'run-vm: exit %d, %d.%02d s wall (boot + programs)\n' "$rc" $((d / 1000000)) $((d % 1000000 / 10000))
if [[ $rc -eq 125 ]]; then
  if grep -q 'program starts' "$tmp/rig.err"; then
    echo "run-vm: FAIL: the VM died while the program ran (rig status 125)"
    exit 1
  fi
  skip "the rig could not install qemu / a kernel or boot the VM here (status 125): $(grep 'run-in-vm:' "$tmp/rig.err" | tail -n1)"
fi
exit "$rc"
