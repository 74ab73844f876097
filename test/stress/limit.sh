#!/usr/bin/env bash
# Run a program inside a fresh memory cgroup (cgroup v2, or v1's memory
# controller) with a limit and no swap, below the cgroup this test runs in:
#   limit.sh PROGRAM [LIMIT_MIB (1024)]   (PROGRAM gets LIMIT_MIB as its argument)
# With PZ_LIMIT_LATE=1 the program starts outside and is moved in 0.3 s
# later (a container limited after start): it gets "late" as a second argument.
# Skips (exit 77) where no cgroup can be made (not root, no memory controller);
# fails when the program is killed (OOM).
set -u
prog=$1
limit_mib=${2:-1024}
own_v1=$(sed -n 's/^[0-9]*:memory:\(.*\)$/\1/p' /proc/self/cgroup)
own_v2=$(sed -n 's/^0::\(.*\)$/\1/p' /proc/self/cgroup)
cg=
if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
  cg=/sys/fs/cgroup${own_v2%/}/prezero-limit-$$
  mkdir "$cg" 2>/dev/null && echo $((limit_mib << 20)) > "$cg/memory.max" 2>/dev/null && echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
  [ -f "$cg/memory.max" ] && [ "$(cat "$cg/memory.max")" = $((limit_mib << 20)) ] || { rmdir "$cg" 2>/dev/null; cg=; }
fi
if [ -z "$cg" ] && [ -n "$own_v1" ] && [ -d /sys/fs/cgroup/memory ]; then
  cg=/sys/fs/cgroup/memory${own_v1%/}/prezero-limit-$$
  if mkdir "$cg" 2>/dev/null && echo $((limit_mib << 20)) > "$cg/memory.limit_in_bytes"; then
    [ -f "$cg/memory.memsw.limit_in_bytes" ] && echo $((limit_mib << 20)) > "$cg/memory.memsw.limit_in_bytes" 2>/dev/null
  else
    rmdir "$cg" 2>/dev/null; cg=
  fi
fi
if [ -z "$cg" ]; then
  echo "limit: SKIP: cannot make a memory cgroup here (needs root and a memory controller)"
  exit 77
fi
trap 'rmdir "$cg" 2>/dev/null' EXIT
if [ "${PZ_LIMIT_LATE:-0}" = 1 ]; then
  "$prog" "$limit_mib" late &
  pid=$!
  sleep 0.3
  echo $pid > "$cg/cgroup.procs"
  wait $pid
  rc=$?
else
  sh -c 'echo $$ > "$1/cgroup.procs" && exec "$2" "$3"' sh "$cg" "$prog" "$limit_mib"
  rc=$?
fi
if [ $rc -eq 137 ] || [ $rc -eq 9 ]; then
  echo "limit: FAIL: the program was killed (OOM) under a ${limit_mib} MiB limit"
  exit 1
fi
exit $rc
