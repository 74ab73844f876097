/* Claims, release and limits: the pool's side of the workers and of
 * memory going back to the kernel.
 *
 * Owns: the claims workers take (chunks to zero, pre-fault or give back,
 * under rate and limit checks), idle memory given back in blocks aligned
 * for free page reporting, prezero_reserve, trim, the pool's statistics,
 * and the pool across fork. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pool-internal.h"

/* ---------------------------------------------------------------- claims */

/* With the lock held: mark up to `max` free chunks in state `s` BUSY, as
 * contiguous ranges, filling claims[]. Returns the number of ranges. */
static size_t claim(struct pz_node_pool *np, enum pz_chunk_state s, size_t max, struct pz_claim *claims,
                    size_t nclaims) {
  size_t got = 0, nr = 0;
  /* Pre-faulting goes to the region with the most free chunks first, in
   * address order: a reserve then ends up as one contiguous ready run that
   * a large calloc can take whole. */
  struct pz_region *first = NULL;
  if (s == PZ_CS_UNTOUCHED)
    for (struct pz_region *r = np->regions; r; r = r->next)
      if (!first || r->nfree > first->nfree) first = r;
  for (int pass = 0; pass < 2; pass++) {
    for (struct pz_region *r = pass ? np->regions : first; r && got < max && nr < nclaims;
         r = pass ? r->next : NULL) {
      if (pass && r == first) continue;
      for (size_t i = 0; i < r->nchunks && got < max && nr < nclaims; i++) {
        if (r->state[i] != s || r->foreign[i]) continue;
        size_t n = 0;
        uint32_t id = pool_new_claim_id(np, s == PZ_CS_UNTOUCHED);
        /* fresh chunks still advised for 4 KiB pages (COLD: given back,
         * or their pages lent out) are faulted in as huge pages: a range is
         * all of them or none */
        bool cold = s == PZ_CS_UNTOUCHED && r->nohuge[i] == PZ_NH_COLD;
        while (i + n < r->nchunks && r->state[i + n] == s && !r->foreign[i + n] && got + n < max &&
               (s != PZ_CS_UNTOUCHED || (r->nohuge[i + n] == PZ_NH_COLD) == cold)) {
          pool_claim_chunk(np, r, i + n, id);
          if (cold) r->nohuge[i + n] = 0;
          n++;
        }
        claims[nr++] = (struct pz_claim){r, i, n, s, false, false, id, cold};
        got += n;
        i += n;
      }
    }
  }
  return nr;
}

/* With the lock held: the free chunks on 4 KiB pages (PZ_NH_COLD: they went
 * out fresh when 4 KiB pages faulted faster), in one look.
 *  - Free for COLD_LAZY_MS: MADV_FREE, so the kernel may take them before
 *    anything else (a cgroup limit set after start, another process short
 *    of memory). Not at free (pool_lazyfree): a write to a clean 4 KiB page
 *    costs ~250 ns here, and a program reusing its memory at once would pay
 *    it on every page (calloc + touch of 16 MiB in a loop: 0.68 -> 1.93 ms
 *    a round). Repeated on every look until converted, which is harmless.
 *  - READY and free for COLD_CONVERT_MS, when `convert`: claimed (up to max
 *    chunks) for a worker to fault in as huge pages again: what the pool
 *    lends to served mmaps, and fewer TLB misses. Not sooner: memory reused
 *    at once is zeroed in place (a huge page's fault can cost 7 ms per
 *    2 MiB on a VM, zeroing 0.1 ms).
 * Returns the claims made; *young: some are younger than COLD_CONVERT_MS
 * (the worker looks again soon). */
#define COLD_LAZY_MS 100
#define COLD_CONVERT_MS 500
static size_t cold_chunks(struct pz_node_pool *np, uint32_t now, bool convert, size_t max,
                          struct pz_claim *claims, size_t nclaims, bool *young) {
  size_t got = 0, nr = 0;
  *young = false;
  if (!pool_thp_on()) return 0;
  for (struct pz_region *r = np->regions; r; r = r->next)
    for (size_t i = 0; i < r->nchunks; i++) {
#define IDLE(k) ((long)(uint32_t)(now - r->idle_since[k]))
#define COLD_FREE(k, st) (r->state[k] == (st) && r->nohuge[k] == PZ_NH_COLD && !r->foreign[k])
      if (!COLD_FREE(i, PZ_CS_READY) && !COLD_FREE(i, PZ_CS_DIRTY)) continue;
      if (convert && got < max && nr < nclaims && COLD_FREE(i, PZ_CS_READY) && IDLE(i) >= COLD_CONVERT_MS) {
        size_t n = 0;
        uint32_t id = pool_new_claim_id(np, false);
        while (i + n < r->nchunks && got + n < max && COLD_FREE(i + n, PZ_CS_READY) && IDLE(i + n) >= COLD_CONVERT_MS) {
          pool_claim_chunk(np, r, i + n, id);
          r->nohuge[i + n] = 0; /* a huge page again: the worker faults it in */
          n++;
        }
        claims[nr++] = (struct pz_claim){r, i, n, PZ_CS_READY, false, false, id, true};
        got += n;
        i += n - 1;
        continue;
      }
      *young |= IDLE(i) < COLD_CONVERT_MS;
      if (IDLE(i) >= COLD_LAZY_MS) pz_os.madvise(r->base + (i << PZ_CHUNK_SHIFT), PZ_CHUNK_SIZE, MADV_FREE);
#undef COLD_FREE
#undef IDLE
    }
  return nr;
}

/* PREZERO_POOL_MIN: make room for it as one run and let the workers fill it
 * in the background (the program goes on). */
void pz_pool_prepare(void) {
  size_t want = (size_t)pz_opt(PZ_OPT_POOL_MIN) >> PZ_CHUNK_SHIFT;
  if (!want || !pz_opt(PZ_OPT_ZERO)) return;
  struct pz_node_pool *np = pool_current();
  pthread_mutex_lock(&np->lock);
  bool fits = false;
  for (struct pz_region *r = np->regions; r && !fits; r = r->next) {
    int sc;
    fits = r->nfree >= want && pool_find_run(r, want, 0, SCORE_ZERO, &sc) >= 0;
  }
  /* with room to spare: the program's own small chunks must not break the run */
  if (!fits) pool_region_create(np, want + want / 16 + 8, 0);
  pool_wake_worker(np);
  pthread_mutex_unlock(&np->lock);
  pz_workers_start(np->node);
}

/* ---------------------------------------------------------------- release */

/* Memory goes back to the kernel in whole blocks of the free page reporting
 * size (at least a chunk), aligned to it: a smaller or unaligned release
 * gives a hypervisor nothing and lets khugepaged fill it in again. */
static size_t block_chunks(void) { return pz_release_align() >> PZ_CHUNK_SHIFT; }

/* With the lock held: idle time of the block at chunk i of r in ms, or -1
 * when some chunk of it is not free (or the block leaves the region). */
static long block_idle(const struct pz_region *r, size_t i, size_t b, uint32_t now) {
  if (i + b > r->nchunks) return -1;
  long idle = LONG_MAX;
  for (size_t k = i; k < i + b; k++) {
    uint8_t st = r->state[k];
    if (st != PZ_CS_DIRTY && st != PZ_CS_READY) return -1;
    long t = (long)(uint32_t)(now - r->idle_since[k]);
    if (t < idle) idle = t;
  }
  return idle;
}

/* First chunk index of r at a block boundary (blocks are aligned by address). */
static size_t first_block(const struct pz_region *r, size_t b) {
  size_t at = ((uintptr_t)r->base >> PZ_CHUNK_SHIFT) % b;
  return at ? b - at : 0;
}

/* Free chunks in releasable blocks, idle for at least `ms` (lock held). */
static size_t idle_chunks(struct pz_node_pool *np, uint32_t now, long ms) {
  size_t b = block_chunks(), n = 0;
  for (struct pz_region *r = np->regions; r; r = r->next)
    for (size_t i = first_block(r, b); i + b <= r->nchunks; i += b)
      if (block_idle(r, i, b, now) >= ms) n += b;
  return n;
}

/* Claim up to n chunks (whole blocks idle for `ms`) to give back; dirty
 * blocks before ready ones (a worker's zeroing is worth keeping). */
static size_t claim_release(struct pz_node_pool *np, size_t n, long ms, struct pz_claim *claims,
                            size_t nclaims) {
  size_t b = block_chunks(), got = 0, nr = 0;
  uint32_t now = pool_now_ms();
  for (int pass = 0; pass < 2; pass++)
    for (struct pz_region *r = np->regions; r && got < n; r = r->next)
      for (size_t i = first_block(r, b); i + b <= r->nchunks && got < n; i += b) {
        if (block_idle(r, i, b, now) < ms) continue;
        bool dirty = false;
        for (size_t k = i; k < i + b; k++) dirty |= r->state[k] == PZ_CS_DIRTY;
        if (pass == 0 && !dirty) continue;
        struct pz_claim *last = nr ? &claims[nr - 1] : NULL;
        if (last && last->region == r && last->start + last->n == i) {
          last->n += b;
          if (dirty) last->from = PZ_CS_DIRTY;
        } else if (nr < nclaims) {
          claims[nr++] = (struct pz_claim){r, i, b, dirty ? PZ_CS_DIRTY : PZ_CS_READY, true, true,
                                           pool_new_claim_id(np, false), false};
        } else {
          return nr;
        }
        for (size_t k = i; k < i + b; k++) pool_claim_chunk(np, r, k, claims[nr - 1].id);
        got += b;
      }
  return nr;
}

/* Memory limits, looked at no more than every 100 ms (not on any
 * allocation path: only the workers do). Pressure: the cgroup is within
 * 10% of its limit, or MemAvailable under 1/16 of the machine. Headroom:
 * what pre-faulting may still add, leaving a quarter of the cgroup limit
 * and an eighth of the machine free. */
static void check_limits(struct pz_node_pool *np, size_t *headroom) {
  size_t limit = pz_kernel.cgroup_max < pz_kernel.cgroup_high ? pz_kernel.cgroup_max : pz_kernel.cgroup_high;
  size_t total, avail, room = SIZE_MAX;
  bool pressure = false;
  if (!pz_probe_memory_nofile(&total, &avail)) pz_probe_memory(&total, &avail); /* a worker: no file if it can */
  if (total && avail) {
    pressure |= avail < total / 16;
    room = avail > total / 8 ? avail - total / 8 : 0;
  }
  if (limit != SIZE_MAX) {
    size_t used = pz_probe_cgroup_usage();
    pressure |= used > limit - limit / 10;
    size_t cg = used < limit - limit / 4 ? limit - limit / 4 - used : 0;
    if (cg < room) room = cg;
  }
  if (pressure && !np->pressure) np->st.pressure_events++;
  np->pressure = pressure;
  /* tight: no head room left for pre-faulting. Idle memory above the low
   * watermark then goes back after the short decay, not the retention:
   * another process near the limit may need it before we notice pressure */
  np->tight = room == 0;
  *headroom = room == SIZE_MAX ? SIZE_MAX : room >> PZ_CHUNK_SHIFT;
}

size_t pz_pool_claim(unsigned node, struct pz_claim *claims, size_t nclaims) {
  struct pz_node_pool *np = &pz_nodes[node];
  bool timed_out = false;
  pthread_mutex_lock(&np->lock);
  for (;;) {
    uint64_t t = pz_os_now_ns();
    if (t - np->limits_checked_ns > 100000000u) { /* files are read without the lock */
      np->limits_checked_ns = t;
      pthread_mutex_unlock(&np->lock);
      size_t headroom;
      check_limits(np, &headroom);
      pthread_mutex_lock(&np->lock);
      np->headroom = headroom;
    }
    long decay = (long)pz_opt(PZ_OPT_DECAY_MS), retain = (long)pz_opt(PZ_OPT_RETAIN_MS);
    if (np->tight && (!retain || retain > decay)) retain = decay ? decay : 1;
    uint32_t now = pool_now_ms();
    struct pz_plan_in in = {
        .ready = np->count[PZ_CS_READY], .dirty = np->count[PZ_CS_DIRTY],
        .untouched = np->count[PZ_CS_UNTOUCHED],
        /* under pressure only an explicit reserve is kept, not POOL_MIN */
        .min_ready = np->pressure ? np->reserve : pool_min_ready_chunks(np),
        .max_free = (size_t)pz_opt(PZ_OPT_POOL_MAX) >> PZ_CHUNK_SHIFT,
        .batch = (size_t)pz_opt(PZ_OPT_BATCH), .report_batch = (size_t)pz_opt(PZ_OPT_REPORT_BATCH),
        .idle_any = idle_chunks(np, now, 0), .headroom = np->headroom, .forked = np->forked,
        .pressure = np->pressure};
    in.idle_decay = idle_chunks(np, now, decay);
    in.idle_retain = retain ? idle_chunks(np, now, retain) : 0;
    struct pz_plan plan = pz_worker_plan(&in);
    if (!pz_opt(PZ_OPT_ZERO)) plan.what = PZ_PLAN_IDLE;
    if (plan.what != PZ_PLAN_DISCARD) np->forked = false; /* the inherited chunks are gone */
    if (plan.what == PZ_PLAN_RELEASE) {
      /* the threshold that justifies n: memory past the maximum decays first */
      size_t free = in.ready + in.dirty;
      long ms = in.pressure ? 0 : (free > in.max_free && plan.n <= free - in.max_free && plan.n <= in.idle_decay) ? decay : retain;
      size_t nr = claim_release(np, plan.n, ms, claims, nclaims);
      if (nr) {
        pthread_mutex_unlock(&np->lock);
        return nr;
      }
    } else if (plan.what != PZ_PLAN_IDLE) {
      enum pz_chunk_state s = plan.what == PZ_PLAN_POPULATE ? PZ_CS_UNTOUCHED : PZ_CS_DIRTY;
      size_t nr = claim(np, s, plan.n, claims, nclaims);
      for (size_t k = 0; k < nr; k++) {
        claims[k].discard = plan.what == PZ_PLAN_DISCARD;
        if (plan.what == PZ_PLAN_POPULATE) /* until the limits are read again */
          np->headroom -= np->headroom == SIZE_MAX ? 0 : claims[k].n < np->headroom ? claims[k].n : np->headroom;
      }
      pthread_mutex_unlock(&np->lock);
      return nr;
    }
    bool cold_young; /* conversions wait while memory is short */
    size_t nr = cold_chunks(np, now, !np->pressure && !np->tight, (size_t)pz_opt(PZ_OPT_BATCH), claims, nclaims,
                            &cold_young);
    if (nr) {
      pthread_mutex_unlock(&np->lock);
      return nr;
    }
    /* Memory that will be given back once idle long enough keeps the worker
     * (waking a few times per decay period); without it, it leaves. */
    struct pz_plan_in later = in;
    later.idle_decay = in.idle_any;
    later.idle_retain = retain ? in.idle_any : 0;
    later.pressure = false;
    bool pending = pz_worker_plan(&later).what == PZ_PLAN_RELEASE;
    /* a batch or more of memory that pressure would take back (all but an
     * explicit reserve) keeps a worker looking at the limits, four times a
     * second; less is not worth the wake-ups */
    bool watch = in.ready + in.dirty >= np->reserve + in.report_batch && pz_opt(PZ_OPT_ZERO);
    /* a second without work, and still none: leave; the next work restarts
     * us. Also when the program's threads are all gone (its main thread
     * ended with pthread_exit): memory kept for it is of no use, and the
     * process ends only when this thread does */
    if ((timed_out && !pending && !watch && !cold_young) || pz_only_own_threads()) {
      int w = atomic_load(&np->workers);
      atomic_store(&np->workers, w > 1 ? w - 1 : 0);
      pthread_mutex_unlock(&np->lock);
      return SIZE_MAX;
    }
    /* while memory is pending, look ten times a second (also at the limits:
     * another process may need the memory) */
    long wait_ms = pending ? (decay / 4 < 100 ? (decay / 4 > 10 ? decay / 4 : 10) : 100) : watch ? 250 : 1000;
    if (cold_young && wait_ms > COLD_LAZY_MS) wait_ms = COLD_LAZY_MS; /* freed 4 KiB chunks: reclaimable soon */
    /* main has ended: the program's last thread may leave any moment, and
     * nothing wakes us then (a thread that never allocated runs none of
     * our code): look ten times a second (measured: 0.7 s of exit delay) */
    if (wait_ms > 100 && pz_main_has_exited()) wait_ms = 100;
    np->sleeping++;
    int rc = pool_cond_wait_ms(&np->work, &np->lock, wait_ms);
    np->sleeping--;
    timed_out = rc == ETIMEDOUT; /* look at the plan once more before leaving */
    if (timed_out && pz_worker_refresh) {
      /* awake anyway, waiting to give memory back: the statistics snapshot
       * stays fresh (at most once a second; it only tries locks) */
      pthread_mutex_unlock(&np->lock);
      pz_worker_refresh();
      pthread_mutex_lock(&np->lock);
    }
    if (!timed_out) {
      /* Woken by a free: let the program take back what it reuses at once
       * (malloc wants it dirty; zeroing it first is wasted work and makes
       * the allocation wait for us), then zero what is left. */
      pthread_mutex_unlock(&np->lock);
      struct timespec d = {0, 2000000};
      nanosleep(&d, NULL);
      pthread_mutex_lock(&np->lock);
    }
  }
}

bool pz_pool_commit(const struct pz_claim *c) { return pool_commit(c->region, c->start, c->n) == 0; }

bool pz_pool_give_back(const struct pz_claim *c) { return pool_decommit(c->region, c->start, c->n) == 0; }

void pz_pool_complete(unsigned node, const struct pz_claim *claims, size_t n, const bool *ok) {
  struct pz_node_pool *np = &pz_nodes[node];
  pthread_mutex_lock(&np->lock);
  for (size_t c = 0; c < n; c++) {
    const struct pz_claim *cl = &claims[c];
    /* a failed populate (or commit) left the chunk reading zero, maybe not
     * even committed: untouched, not dirty */
    bool unpopulated = !ok[c] && !cl->discard && cl->from == PZ_CS_UNTOUCHED;
    enum pz_chunk_event done = unpopulated ? PZ_CE_DISCARD : !ok[c] ? PZ_CE_UNCLAIM
                               : cl->discard                    ? PZ_CE_DISCARD
                                                                : PZ_CE_ZEROED;
    for (size_t k = 0; k < cl->n; k++) {
      size_t i = cl->start + k;
      uint8_t st = cl->region->state[i];
      if (cl->region->claim_id[i] != cl->id) continue; /* stolen by an allocation: not ours any more */
      cl->region->claim_id[i] = 0;
      if (cl->id & PZ_CLAIM_POP) cl->region->npop--;
      if (ok[c] && cl->discard && st == PZ_CS_BUSY) cl->region->released[i] = 1;
      if (ok[c] && !cl->discard && cl->from == PZ_CS_UNTOUCHED) {
        cl->region->idle_since[i] = pool_now_ms(); /* ready from now */
        if (cl->region->released[i]) np->st.refaulted_bytes += PZ_CHUNK_SIZE;
        cl->region->released[i] = 0;
      }
      if (st == PZ_CS_TAKEN && !ok[c] && cl->from == PZ_CS_DIRTY) /* promised zero: keep it */
        pz_zero(cl->region->base + ((cl->start + k) << PZ_CHUNK_SHIFT), PZ_CHUNK_SIZE);
      if (done == PZ_CE_DISCARD && st == PZ_CS_TAKEN)
        pool_transition(np, cl->region, cl->start + k, PZ_CE_ZEROED); /* reads zero: hand it over */
      else
        pool_transition(np, cl->region, cl->start + k, done);
      if (cl->region->foreign[i] && is_free_state(cl->region->state[i]))
        pool_clobber_one(np, cl->region, i); /* the program mapped over it meanwhile */
      else if (done == PZ_CE_ZEROED) /* written or populated: reclaimable again (still ours: the lock) */
        pool_lazyfree(cl->region, i, 1);
    }
    if (cl->discard && ok[c]) {
      np->st.discarded_bytes += cl->n << PZ_CHUNK_SHIFT;
      if (cl->release) np->st.released_bytes += cl->n << PZ_CHUNK_SHIFT;
    }
    else if (ok[c]) {
      if (cl->from == PZ_CS_DIRTY) np->st.zeroed_bytes += cl->n << PZ_CHUNK_SHIFT;
      else np->st.populated_bytes += cl->n << PZ_CHUNK_SHIFT;
    }
  }
  pthread_cond_broadcast(&np->done);
  pthread_mutex_unlock(&np->lock);
}

/* ---------------------------------------------------------------- reserve */

/* Make one contiguous run of `bytes` ready, so that an allocation of that
 * size finds it whole, on the caller's thread (it waits anyway, and runs
 * at full priority, unlike the workers); then keep that much ready. */
int pz_chunk_reserve(size_t bytes) {
  size_t want = (bytes + PZ_CHUNK_SIZE - 1) >> PZ_CHUNK_SHIFT;
  if (!want) { /* clears the reserve on every node (the caller may have moved since) */
    for (unsigned n = 0; n < pz_topo.nnodes; n++) {
      pthread_mutex_lock(&pz_nodes[n].lock);
      pz_nodes[n].reserve = 0;
      pthread_mutex_unlock(&pz_nodes[n].lock);
    }
    return 0;
  }
  struct pz_node_pool *np = pool_current();
  pthread_mutex_lock(&np->lock);
  np->reserve = want;
  if (!want) {
    pthread_mutex_unlock(&np->lock);
    return 0;
  }
  struct pz_region *r = NULL;
  long start = -1;
  int best = -1;
  for (struct pz_region *q = np->regions; q; q = q->next) {
    int sc;
    long i = q->nfree >= want ? pool_find_run(q, want, 0, SCORE_ZERO, &sc) : -1;
    if (i >= 0 && sc > best) best = sc, start = i, r = q;
  }
  if (!r && (r = pool_region_create(np, want, 0)) != NULL) start = pool_find_run(r, want, 0, SCORE_ZERO, &best);
  if (!r || start < 0) {
    np->reserve = 0;
    pthread_mutex_unlock(&np->lock);
    return ENOMEM;
  }
  /* make every chunk of the run ready, claiming (and working on) up to 64
   * ranges at a time; chunks someone allocated meanwhile are left alone */
  size_t cursor = (size_t)start, end = (size_t)start + want;
  for (;;) {
    struct pz_claim c[64];
    size_t nc = 0;
    for (; cursor < end && nc < 64; cursor++) {
      uint8_t st = r->state[cursor];
      if (st != PZ_CS_UNTOUCHED && st != PZ_CS_DIRTY) continue;
      if (nc && c[nc - 1].from == st && c[nc - 1].start + c[nc - 1].n == cursor) c[nc - 1].n++;
      else c[nc++] = (struct pz_claim){r, cursor, 1, (enum pz_chunk_state)st, false, false,
                                       pool_new_claim_id(np, st == PZ_CS_UNTOUCHED), false};
      pool_claim_chunk(np, r, cursor, c[nc - 1].id);
    }
    pthread_mutex_unlock(&np->lock);
    bool ok[64] = {false}, all = true;
    for (size_t k = 0; k < nc; k++) {
      char *p = r->base + (c[k].start << PZ_CHUNK_SHIFT);
      size_t len = c[k].n << PZ_CHUNK_SHIFT;
      if (c[k].from == PZ_CS_UNTOUCHED) ok[k] = pool_commit(r, c[k].start, c[k].n) == 0 && pz_populate(p, len);
      else pz_zero(p, len), ok[k] = true;
      all &= ok[k];
    }
    pz_pool_complete(np->node, c, nc, ok);
    if (!all) return ENOMEM;
    if (cursor >= end) return 0;
    pthread_mutex_lock(&np->lock);
  }
}

/* ---------------------------------------------------------------- trim */

/* Give back up to `give` free chunks of a node, never going under
 * `floor` free chunks, in releasable blocks, on the caller's thread. */
size_t pool_shrink_node(unsigned node, size_t give, size_t floor) {
  struct pz_node_pool *np = &pz_nodes[node];
  size_t done = 0;
  while (done < give) {
    pthread_mutex_lock(&np->lock);
    size_t free = np->count[PZ_CS_DIRTY] + np->count[PZ_CS_READY];
    size_t n = free > floor ? free - floor : 0;
    if (n > give - done) n = give - done;
    struct pz_claim c[16];
    size_t nr = n ? claim_release(np, n, 0, c, 16) : 0;
    pthread_mutex_unlock(&np->lock);
    if (!nr) break;
    bool ok[16];
    for (size_t k = 0; k < nr; k++) {
      ok[k] = pool_decommit(c[k].region, c[k].start, c[k].n) == 0;
      if (ok[k]) done += c[k].n;
    }
    /* an allocation may have taken some of it meanwhile: complete hands over */
    pz_pool_complete(node, c, nr, ok);
    if (!ok[0]) break;
  }
  return done;
}

/* Give back free memory above max(keep, the low watermark) now (malloc_trim,
 * prezero_trim). */
size_t pz_chunk_trim(size_t keep) {
  size_t done = 0;
  for (unsigned node = 0; node < pz_topo.nnodes; node++) {
    struct pz_node_pool *np = &pz_nodes[node];
    pthread_mutex_lock(&np->lock);
    /* chunks a worker is zeroing are free memory too: let the batch in
     * flight finish (a few ms; at most half a second on a slow machine) */
    for (int waits = 0; waits < 5; waits++) {
      size_t pop = 0;
      for (struct pz_region *r = np->regions; r; r = r->next) pop += r->npop;
      if (np->count[PZ_CS_BUSY] <= pop) break;
      pool_cond_wait_ms(&np->done, &np->lock, 100);
    }
    size_t floor = pool_min_ready_chunks(np), want = (keep + PZ_CHUNK_SIZE - 1) >> PZ_CHUNK_SHIFT;
    pthread_mutex_unlock(&np->lock);
    done += pool_shrink_node(node, SIZE_MAX, want > floor ? want : floor) << PZ_CHUNK_SHIFT;
  }
  return done;
}

/* An allocation about to fault `fresh` chunks in under a cgroup limit:
 * if that would bring the cgroup within 10% of its limit, the pool gives
 * back free memory first, on the allocating thread (the workers may be
 * slow to notice, and the kernel would kill the biggest process: us). */
void pool_make_room(struct pz_node_pool *np, size_t fresh) {
  size_t limit = pz_kernel.cgroup_max < pz_kernel.cgroup_high ? pz_kernel.cgroup_max : pz_kernel.cgroup_high;
  if (limit == SIZE_MAX) return;
  size_t used = pz_probe_cgroup_usage(), need = fresh << PZ_CHUNK_SHIFT, high = limit - limit / 10;
  if (used + need <= high) return;
  size_t excess = (used + need - high + PZ_CHUNK_SIZE - 1) >> PZ_CHUNK_SHIFT;
  pthread_mutex_lock(&np->lock);
  size_t floor = np->reserve; /* POOL_MIN gives way to the limit; an explicit reserve does not */
  pthread_mutex_unlock(&np->lock);
  pool_shrink_node(np->node, excess, floor);
}

/* ---------------------------------------------------------------- stats, fork */

void pz_chunk_stats(struct pz_pool_stats *out, bool wait) {
  memset(out, 0, sizeof *out);
  for (unsigned node = 0; node < pz_topo.nnodes; node++) {
    struct pz_node_pool *np = &pz_nodes[node];
    /* not waiting (a pool worker): a busy node is read without its lock,
     * each counter a word (recent values, maybe not one consistent set) */
    bool locked = true;
    if (wait) pthread_mutex_lock(&np->lock);
    else locked = pthread_mutex_trylock(&np->lock) == 0;
    for (int s = 0; s < PZ_CS__COUNT; s++) out->chunks[s] += __atomic_load_n(&np->count[s], __ATOMIC_RELAXED);
    const size_t *src = (const size_t *)&np->st;
    size_t *dst = (size_t *)&out->node;
    for (size_t k = 0; k < sizeof np->st / sizeof(size_t); k++) dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    int w = atomic_load(&np->workers);
    out->workers += w > 0 ? (size_t)w : 0;
    if (locked) pthread_mutex_unlock(&np->lock);
  }
  /* huge-page coverage: regions are never unmapped nor unlinked, so the
   * list is walked (and the page tables scanned) without the lock; not
   * without waiting (PAGEMAP_SCAN takes a file descriptor) */
  out->pagemap_scan = wait;
  for (unsigned node = 0; node < pz_topo.nnodes && out->pagemap_scan; node++)
    for (struct pz_region *r = __atomic_load_n(&pz_nodes[node].regions, __ATOMIC_ACQUIRE); r; r = r->next)
      if (pz_os_pagemap_huge(r->base, (size_t)r->nchunks << PZ_CHUNK_SHIFT, &out->resident_bytes,
                             &out->huge_bytes) != 0) {
        out->pagemap_scan = false;
        break;
      }
  out->regions = atomic_load(&pool_regions_made);
  out->reserved_bytes = atomic_load(&pool_reserved_bytes);
  out->thp_refused = atomic_load(&pool_thp_refused);
}

void pz_pool_prefork(void) {
  for (unsigned n = 0; n < pz_topo.nnodes; n++) pthread_mutex_lock(&pz_nodes[n].lock);
}

void pz_pool_postfork(bool child) {
  for (unsigned n = 0; n < pz_topo.nnodes; n++) {
    struct pz_node_pool *np = &pz_nodes[n];
    if (!child) {
      pthread_mutex_unlock(&np->lock);
      continue;
    }
    pthread_mutex_init(&np->lock, NULL);
    pthread_cond_init(&np->work, NULL);
    pthread_cond_init(&np->done, NULL);
    /* the workers did not survive: what they held is dirty, they restart lazily */
    np->sleeping = 0;
    np->forked = true;
    atomic_store(&np->fork_defer, 64);
    atomic_store(&np->workers, 0);
    for (struct pz_region *r = np->regions; r; r = r->next)
      for (size_t i = 0; i < r->nchunks; i++)
        if (r->state[i] == PZ_CS_BUSY || r->state[i] == PZ_CS_TAKEN) {
          /* what the worker had done to it is unknown (decommitted half
           * way, its pages moved out, zeroed in part): replaced by a fresh
           * reservation, so that its state says what it is (a child that
           * callocs took such a chunk, PROT_NONE but marked committed, and
           * died: 1 in ~10 runs of faults-mmap under load); else committed
           * and dirty; else never used again */
          pool_transition(np, r, i, PZ_CE_UNCLAIM);
          r->claim_id[i] = 0;
          if (r->state[i] == PZ_CS_TAIL) continue; /* taken by a thread the child does not have: in use for ever */
          if (pool_decommit(r, i, 1) == 0 && !r->rw[i]) pool_transition(np, r, i, PZ_CE_DISCARD);
          else if (pz_os_commit(r->base + (i << PZ_CHUNK_SHIFT), PZ_CHUNK_SIZE) == 0) r->rw[i] = 1;
          else pool_clobber_one(np, r, i);
        }
    for (struct pz_region *r = np->regions; r; r = r->next) r->npop = 0;
  }
}

