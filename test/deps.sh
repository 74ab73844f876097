# Sourced by test/run.sh and bench/demo.sh: make sure the Debian packages
# prezero needs are present. As root, missing ones are installed (apt-get);
# otherwise the exact list is printed with the command to install it.
# Usage: pz_ensure_packages PKG...
pz_ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "prezero: installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "prezero: missing Debian packages: ${missing[*]}" >&2
    echo "prezero: install them with: sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
}

# What building and testing needs; the integration tests' programs; the peers.
PZ_BUILD_PKGS=(gcc g++ pkg-config meson ninja-build libcmocka-dev libnuma-dev liburcu-dev)
PZ_PROGRAM_PKGS=(python3 git make sqlite3 coreutils xz-utils redis-server libpython3.11-testsuite clang libclang-rt-14-dev)
PZ_PEER_PKGS=(libjemalloc2 libgoogle-perftools4 libmimalloc2.0)
# bench/vmm.py's real VMM (the demo's hotplug) and runtime (its jvm case, installed by hand).
PZ_VMM_PKGS=(qemu-system-x86)
