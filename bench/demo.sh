#!/usr/bin/env bash
# prezero demo: build the library, then run a real program (python3 building
# 64 MiB zeroed frames), a calloc + first-touch loop and a real VMM (QEMU
# hot-adding 2 GiB of guest RAM with prealloc=on) with glibc's malloc and
# with prezero, side by side. Installs missing Debian packages when run as
# root. Usage: bash bench/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pz_ensure_packages "${PZ_BUILD_PKGS[@]}" python3 "${PZ_VMM_PKGS[@]}"

builddir=${PREZERO_BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" >/dev/null
ninja -C "$builddir" >/dev/null
lib=$(pwd)/$builddir/src/libprezero.so
py=/usr/bin/python3; [ -x "$py" ] || py=$(command -v python3)

echo "== prezero demo on $(nproc) cores, $(uname -r), THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"
echo
echo "-- python3: 60 fresh 64 MiB frames, each zeroed, touched and dropped"
printf '%-8s ' glibc;   "$py" bench/demo_frames.py 60
printf '%-8s ' prezero; LD_PRELOAD=$lib "$py" bench/demo_frames.py 60

ft=$builddir/bench/bench-first-touch
if [ -x "$ft" ]; then
  echo
  echo "-- C: calloc 256 MiB, write every page, free (20 rounds)"
  printf '%-8s ' glibc;   "$ft" size=256M rounds=20 mode=touch | sed 's/^ok [^ ]* //'
  printf '%-8s ' prezero; LD_PRELOAD=$lib "$ft" size=256M rounds=20 mode=touch | sed 's/^ok [^ ]* //'
fi
if command -v qemu-system-x86_64 >/dev/null; then
  echo
  echo "-- QEMU (stopped, driven over QMP): hot-add 2 GiB of guest RAM with prealloc=on, 8 s after start"
  echo "   (prezero: PREZERO_POOL_MIN=2G, the guest size, so its workers prepare it meanwhile)"
  "$py" bench/vmm.py --builddir "$builddir" --only hotplug --size 2G --reps 1 --allocators glibc,prezero |
    grep -E "^vmm: round" | sed 's/^vmm: round 1 hotplug  //'
fi
echo
echo "What prezero did for python3 (PREZERO_STATS=1):"
PREZERO_STATS=1 LD_PRELOAD=$lib "$py" bench/demo_frames.py 10 2>&1 >/dev/null | grep -E "statistics|calloc|large|chunks free|given back"
echo
echo "Full comparison with jemalloc, tcmalloc and mimalloc: python3 bench/run.py --builddir $builddir"
