/* info-pid-fake: a program without prezero that exports a `prezero_snapshot`
 * of another version (linked with -rdynamic): prezero-info --pid must say
 * "version mismatch", not print what it cannot read. Sleeps until killed. */
#include <stdint.h>
#include <unistd.h>

struct {
  uint64_t magic;
  uint32_t version, size;
  uint64_t seq;
} prezero_snapshot __attribute__((visibility("default"))) = {0x313050414e535a50ull /* "PZSNAP01" */, 999, 64, 2};

int main(void) {
  for (;;) pause();
}
