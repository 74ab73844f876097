#!/usr/bin/env bash
# Build the libFuzzer harness with clang against prezero's core sources (not
# the malloc overrides) and run it for a while. Skips (77) without clang or
# libFuzzer. Usage: test/fuzz/run.sh [seconds] (default 20; longer by hand:
# test/fuzz/run.sh 3600). Crashes are kept in build/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}
cc=$(command -v clang || command -v clang-14 || true)
[ -n "$cc" ] || { echo "fuzz: SKIP: clang is not installed"; exit 77; }
out=${PZ_FUZZ_DIR:-build/fuzz}
mkdir -p "$out/corpus"
srcs=$(ls src/*.c src/os/*.c src/pool/*.c src/small/*.c src/large/*.c src/api/*.c | grep -v src/api/override.c)
if ! "$cc" -g -O1 -fsanitize=fuzzer -D_GNU_SOURCE -DPZ_DEBUG=1 -fvisibility=hidden -Iinclude -Isrc \
     -fno-builtin-malloc -fno-builtin-free -fno-builtin-calloc -fno-builtin-realloc \
     $srcs test/fuzz/fuzz_api.c -lpthread -o "$out/fuzz_api" 2>"$out/build.log"; then
  if grep -q "fuzzer" "$out/build.log"; then echo "fuzz: SKIP: libFuzzer unavailable: $(head -2 "$out/build.log")"; exit 77; fi
  cat "$out/build.log" >&2
  exit 1
fi
# a seed corpus of a few op sequences
printf '\x10\x00\x00\x00\x20\x40\x04\x21\x01\x02\x03\x41\x00\x10\x01\x62\x05\x00\x00\xc3' >"$out/corpus/seed1"
"$out/fuzz_api" -max_total_time="$secs" -max_len=512 -timeout=20 -rss_limit_mb=4096 \
  -artifact_prefix="$out/" "$out/corpus" 2>&1 | tail -n 6
