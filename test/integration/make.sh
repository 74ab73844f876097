#!/usr/bin/env bash
# GNU make -j2 under the preload (make, its shells, gcc, ar and ld all run
# preloaded): a generated project of 40 C modules plus main, with header
# dependencies tracked through -MMD, a generated header and a static
# library. The program must print the value computed here in bash, an
# incremental rebuild after a header edit must rebuild exactly the
# dependents, and the binary must equal the one built without preload.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd make gcc ar

N=40
mkdir -p proj
(
  cd proj
  for ((i = 0; i < N; i++)); do
    p=$(((i + N - 1) % N))
    cat >"mod_$i.h" <<EOF
#ifndef MOD_${i}_H
#define MOD_${i}_H
#define K$i $((i * 3 + 1))
long f$i(long x);
#endif
EOF
    cat >"mod_$i.c" <<EOF
#include <stdlib.h>
#include <string.h>
#include "mod_$i.h"
#include "mod_$p.h"
#include "gen.h"
long f$i(long x) {
  /* a little heap traffic in every module */
  char *buf = malloc(64 + $i * 100);
  memset(buf, $i, 64 + $i * 100);
  long extra = buf[$i] - $i;
  free(buf);
  return (x * K$i + K$p + GEN_SALT + extra) % 1000003;
}
EOF
  done
  {
    echo '#include <stdio.h>'
    for ((i = 0; i < N; i++)); do echo "#include \"mod_$i.h\""; done
    echo 'int main(void) {'
    echo '  long acc = 1;'
    for ((i = 0; i < N; i++)); do echo "  acc = f$i(acc) + $i;"; done
    echo '  printf("result %ld\n", acc);'
    echo '  return 0;'
    echo '}'
  } >main.c
  echo 5 >salt.txt
  {
    printf 'LIBOBJS := $(patsubst %%.c,%%.o,$(wildcard mod_1*.c mod_2*.c))\n'
    printf 'OBJS := $(filter-out $(LIBOBJS),$(patsubst %%.c,%%.o,$(wildcard mod_*.c))) main.o\n'
    printf 'CFLAGS := -O2 -Wall -MMD -MP\n'
    printf 'prog: $(OBJS) libmods.a\n\t$(CC) -o $@ $(OBJS) -L. -lmods\n'
    printf 'libmods.a: $(LIBOBJS)\n\trm -f $@\n\t$(AR) rcs $@ $^\n'
    printf '%%.o: %%.c gen.h\n\t$(CC) $(CFLAGS) -c $< -o $@\n'
    printf 'gen.h: salt.txt\n\tsed "s/.*/#define GEN_SALT &/" $< >$@.tmp && mv $@.tmp $@\n'
    printf 'clean:\n\trm -f *.o *.d *.a prog gen.h\n'
    printf -- '-include $(wildcard *.d)\n'
  } >Makefile
)

expected() {  # expected SALT K5: the value main prints, computed in bash
  local salt=$1 k5=$2 acc=1 i p ki kp
  for ((i = 0; i < N; i++)); do
    p=$(((i + N - 1) % N))
    ki=$((i * 3 + 1)); kp=$((p * 3 + 1))
    [ "$i" -eq 5 ] && ki=$k5
    [ "$p" -eq 5 ] && kp=$k5
    acc=$(((acc * ki + kp + salt) % 1000003 + i))
  done
  echo "result $acc"
}

cp -a proj ref
mv proj pz

# Reference build without preload, for the binary comparison.
pz_ref make-ref make -C ref -j2 >make.ref.out
# Full parallel build with the preload.
pz_run make-full make -C pz -j2 >make.full.out
ncc=$(grep -c -- '-c mod_\|-c main' make.full.out || true)
pz_compare_str "compile commands in the full build" $((N + 1)) "$ncc"
pz_run run-1 ./pz/prog >run1.out
pz_compare_str "program output after the full build" "$(expected 5 16)" "$(cat run1.out)"
pz_compare_files "binary built by make -j2" ref/prog pz/prog

# Nothing to do now: make -q exits 0 (preloaded and not).
pz_run make-q make -C pz -q
if ! env -u LD_PRELOAD make -C pz -q >/dev/null 2>&1; then
  pz_fail "make -q says the tree is not up to date right after a build"
fi

# Edit a header: its module, the next module (includes it) and main rebuild.
sleep 1  # make compares timestamps
sed -i 's/#define K5 16/#define K5 77/' pz/mod_5.h
pz_run make-incr make -C pz -j2 >make.incr.out
rebuilt=$(grep -o -- '-c [a-z_0-9]*\.c' make.incr.out | sort | tr '\n' ' ')
pz_compare_str "files rebuilt after editing mod_5.h" "-c main.c -c mod_5.c -c mod_6.c " "$rebuilt"
pz_run run-2 ./pz/prog >run2.out
pz_compare_str "program output after the incremental build" "$(expected 5 77)" "$(cat run2.out)"

# Change the generated header's input: everything rebuilds.
sleep 1
echo 9 >pz/salt.txt
pz_run make-salt make -C pz -j2 >make.salt.out
pz_run run-3 ./pz/prog >run3.out
pz_compare_str "program output after regenerating gen.h" "$(expected 9 77)" "$(cat run3.out)"

# clean + rebuild must again match the reference build (after undoing edits).
sed -i 's/#define K5 77/#define K5 16/' pz/mod_5.h
echo 5 >pz/salt.txt
pz_run make-clean make -C pz clean >/dev/null
pz_run make-again make -C pz -j2 >/dev/null
pz_compare_files "binary after clean rebuild" ref/prog pz/prog

pz_pass "$(cat run1.out), incremental rebuilds correct"
