/* Diagnostics without malloc: a small printf subset into a stack buffer,
 * written to stderr with write(2). Safe from any allocation path, from
 * signal handlers and from a child after fork. Also the one answer to a
 * refused request, pz_oom. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

struct out { char *buf; size_t cap, len; };

static void put(struct out *o, char c) {
  if (o->len + 1 < o->cap) o->buf[o->len] = c;
  o->len++;
}

static void put_num(struct out *o, unsigned long long v, unsigned base, bool neg, int width,
                    char pad) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  if (neg) tmp[n++] = '-';
  for (int i = n; i < width; i++) put(o, pad);
  while (n) put(o, tmp[--n]);
}

size_t pz_vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap) {
  struct out o = {buf, cap, 0};
  for (const char *f = fmt; *f; f++) {
    if (*f != '%') { put(&o, *f); continue; }
    f++;
    char pad = ' ';
    int width = 0, lng = 0;
    bool left = false;
    if (*f == '-') { left = true; f++; }
    if (*f == '0') { pad = '0'; f++; }
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    while (*f == 'l' || *f == 'z') { lng++; f++; }
    switch (*f) {
    case 'd': {
      long long v = lng ? va_arg(ap, long long) : va_arg(ap, int);
      put_num(&o, v < 0 ? -(unsigned long long)v : (unsigned long long)v, 10, v < 0, width, pad);
      break;
    }
    case 'u': case 'x': {
      unsigned long long v = lng ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
      put_num(&o, v, *f == 'x' ? 16 : 10, false, width, pad);
      break;
    }
    case 'p':
      put(&o, '0'); put(&o, 'x');
      put_num(&o, (uintptr_t)va_arg(ap, void *), 16, false, 0, ' ');
      break;
    case 's': {
      const char *s = va_arg(ap, const char *);
      if (!s) s = "(null)";
      int n = (int)strlen(s);
      if (!left) for (int i = n; i < width; i++) put(&o, ' ');
      while (*s) put(&o, *s++);
      if (left) for (int i = n; i < width; i++) put(&o, ' ');
      break;
    }
    case 'c': put(&o, (char)va_arg(ap, int)); break;
    case '%': put(&o, '%'); break;
    default: put(&o, '?'); if (!*f) f--; break;
    }
  }
  if (cap) buf[o.len < cap ? o.len : cap - 1] = 0;
  return o.len;
}

size_t pz_snprintf(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t n = pz_vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
  return n;
}

void pz_write_stderr(const char *s, size_t n) {
  int saved = errno;
  while (n) {
    ssize_t w = syscall(SYS_write, 2, s, n); /* write(2) is a cancellation point; malloc is not */
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    s += w;
    n -= (size_t)w;
  }
  errno = saved;
}

static void vlog(const char *prefix, const char *fmt, va_list ap) {
  char buf[512];
  size_t n = pz_snprintf(buf, sizeof buf, "%s", prefix);
  n += pz_vsnprintf(buf + n, sizeof buf - n, fmt, ap);
  if (n > sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  pz_write_stderr(buf, n);
}

void pz_log(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog("prezero: ", fmt, ap);
  va_end(ap);
}

void pz_warn(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog("prezero: warning: ", fmt, ap);
  va_end(ap);
}

void pz_fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog("prezero: ", fmt, ap);
  va_end(ap);
  abort();
}

/* ------------------------------------------------------------ debug build */

void pz_debug_poison(void *b, size_t size) {
  if (size > 2 * sizeof(void *)) memset((char *)b + 2 * sizeof(void *), PZ_POISON, size - 2 * sizeof(void *));
}

void pz_debug_check_poison(void *b, size_t size) {
  const unsigned char *p = b;
  for (size_t i = 2 * sizeof(void *); i < size; i++)
    if (p[i] != PZ_POISON)
      pz_fatal("write after free detected: block %p (size %zu) byte %zu changed to 0x%x", b, size, i, p[i]);
}

void pz_bad_pointer(const char *fn, const char *what, const void *p) { pz_fatal("%s(): %s: %p", fn, what, p); }

/* Every refused request ends here: counted (prezero_stats.oom), errno set. */
void *pz_oom(void) {
  atomic_fetch_add_explicit(&pz_gstats.oom, 1, memory_order_relaxed);
  errno = ENOMEM;
  return NULL;
}
