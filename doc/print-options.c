/* print-options: prints pz_option_table (src/options.c), the one table of
 * the PREZERO_* variables, one line per option, for doc/gen-options.py,
 * which generates the variable tables of README.md and prezero(7) from it.
 *
 * Output, fields separated by tabs (no field holds a tab or a newline):
 *   name  kind  default  min  max  choices  description
 * name without the PREZERO_ prefix; kind one of bool size enum count nodes
 * path text; choices joined by '|' ("-" when the kind has none).
 *
 * Built by doc/meson.build against prezero_core, as prezero-info is; it
 * reads the table only and never allocates through prezero. */
#include <stdio.h>

#include "internal.h"

/* Should the link ever pull in the core's constructor (api/init.c), it
 * then only reads the options and probes, as for prezero-info. */
const int pz_inspect_only = 1;

static const char *kind_name(enum pz_opt_kind k) {
  switch (k) {
  case PZ_OK_BOOL: return "bool";
  case PZ_OK_SIZE: return "size";
  case PZ_OK_ENUM: return "enum";
  case PZ_OK_COUNT: return "count";
  case PZ_OK_NODES: return "nodes";
  case PZ_OK_PATH: return "path";
  case PZ_OK_TEXT: return "text";
  }
  return "unknown";
}

int main(void) {
  for (int i = 0; i < PZ_OPT__COUNT; i++) {
    const struct pz_option_desc *d = &pz_option_table[i];
    printf("%s\t%s\t%lld\t%lld\t%lld\t", d->name, kind_name(d->kind), d->def, d->min, d->max);
    if (d->kind == PZ_OK_ENUM && d->choices)
      for (int c = 0; d->choices[c]; c++) printf("%s%s", c ? "|" : "", d->choices[c]);
    else
      printf("-");
    printf("\t%s\n", d->doc);
  }
  return ferror(stdout) ? 1 : 0;
}
