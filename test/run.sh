#!/usr/bin/env bash
# Build prezero and run every test suite (unit, stress, integration, then the
# debug build's unit and stress, then the vm suite: NUMA and the 6.1 kernel
# in a small QEMU VM, skipped with a reason where the rig is missing).
# Installs missing Debian packages when run as root. Usage: bash test/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pz_ensure_packages "${PZ_BUILD_PKGS[@]}" "${PZ_PROGRAM_PKGS[@]}"

builddir=${PREZERO_BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" >/dev/null
ninja -C "$builddir"
meson test -C "$builddir" --print-errorlogs --num-processes 2 --suite unit --suite stress --suite dropin --suite integration

# The debug build (internal checks, poisoned frees) runs the unit and stress suites again.
[ -f "$builddir-debug/build.ninja" ] || meson setup "$builddir-debug" -Ddebug_checks=true -Dbench=false >/dev/null
ninja -C "$builddir-debug"
meson test -C "$builddir-debug" --print-errorlogs --num-processes 2 --suite unit --suite stress

# The libFuzzer harness for 20 s (clang; skipped with a reason without it).
meson test -C "$builddir" --print-errorlogs --suite fuzz

# NUMA placement and kernel fallbacks inside a small VM (../shared/vmtest): 1-2 minutes.
meson test -C "$builddir" --print-errorlogs --num-processes 2 --suite vm
