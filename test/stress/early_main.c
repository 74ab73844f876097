/* Allocation before prezero's constructor: see early_lib.c. */
#include <stdio.h>
#include <stdlib.h>

#include "prezero.h"

extern void *early_block;
extern int early_ok;

int main(void) {
  if (!early_ok) {
    fprintf(stderr, "early: allocation in an earlier constructor failed\n");
    return 1;
  }
  /* the block came from prezero (foreign pointers have usable size 0) */
  if (prezero_malloc_usable_size(early_block) < 1000) {
    fprintf(stderr, "early: block not from prezero\n");
    return 1;
  }
  free(early_block);
  puts("early: ok");
  return 0;
}
