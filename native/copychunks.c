/*
 * Bulk copy for vmforge-img convert into a file target (raw, or qcow2 with JavaScript planning
 * where each chunk's data goes): chunks of source files are copied to the target in order,
 * their all-zero runs left out, with no JavaScript between the writes.
 *
 * Why: the target's buffered writes are the copy's critical path (ext4 serialises one file's
 * writes), and they are cheaper from a buffer another core has just filled (it sits in the
 * shared cache) than from the source's page-cache pages mapped (mapread.c), which the writer
 * then reads from memory itself. A C pipeline of this shape copied 400 MiB in 50-58 ms against
 * ~95 ms for the JavaScript copy loop over mapped chunks (docs/img-convert.md).
 *
 * Shape: READERS reader threads each pread() a chunk into one of RING reused buffers, mark its
 * all-zero 512-byte sectors and split it into data and zero runs exactly as qemu-img's
 * is_allocated_sectors_min() (qemu-img.c convert_co_write; the same code as
 * src/img/convert/copy.ts allocatedRunMin); chunks are published in order, to the writer or
 * (planned jobs) first to the JavaScript planner; one writer thread pwrite()s the data runs,
 * in order. Zero runs are not written: only for targets that already read as zeros. The
 * threads serve a queue of jobs (one per copyChunks call) and run until releaseCopyBuffers(), so
 * consecutive calls flow through without the pipeline draining between them; the writer hands
 * a finished job back to its JavaScript thread through a thread-safe function. No libuv pool
 * thread waits on a job.
 *
 *   copyChunks(targetFd, targetSize, chunks: Float64Array, minSparse, alignment)
 *       -> Promise<Float64Array>
 *     chunks: 4 numbers per chunk: target offset, length (both multiples of 512, at most
 *     16 MiB), source fd, source offset. Resolves with [chunks done, errno, failed step, then
 *     the byte ranges of the done chunks that were left out as zeros, merged, 2 numbers each].
 *     A job stops at its first chunk that fails (errno set; step 1 read, 2 write; EIO for a
 *     source shorter than the chunk): the caller copies that chunk and the rest the ordinary
 *     way, which reports the error in qemu-img's words (or succeeds).
 *   copyChunks(targetFd, targetSize, chunks, minSparse, alignment, planner) -> same
 *     A planned job, for a target whose guest offsets are not file offsets (qcow2): once a
 *     chunk is read and split, planner(slot, generation, chunkIndex, runs) is called on the
 *     job's JavaScript thread with its data runs (Uint32Array: start and count in sectors,
 *     relative to the chunk), and the writer waits for planCopyChunk() to say where they go.
 *     No zero ranges are reported: the plan writes exactly what it lists.
 *   planCopyChunk(slot, generation, writes: Float64Array | null, extra: Uint8Array | null)
 *     The host writes of a chunk handed to the planner, in order, 4 numbers each: host offset,
 *     length, source (0: the chunk's bytes, 1: `extra`'s), offset in that source. Contiguous
 *     writes are made with one pwritev(). null fails the job (errno ECANCELED, step 3): the
 *     planner failed, and says why itself. A late answer (the job was cancelled) is ignored.
 *   cancelCopyChunks(targetFd) -> undefined
 *     Ends every queued job writing to targetFd after the chunk each is writing (errno
 *     ECANCELED): for Ctrl-C and for a copy that failed elsewhere.
 *   releaseCopyBuffers() -> undefined
 *     Ends the threads and frees the buffers when no job is queued (call when a copy is done).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#include "sectors.h"

/* Buffers in flight between reader and writer: enough to keep both busy, few enough to stay
 * in the shared cache (4 x 2 MiB of a 32 MiB L3 measured best; 8 or 16 were slower). */
#define RING 4
/* Readers: reading (a copy out of the page cache, and the zero scan) costs about twice what
 * writing does, so one reader left the writer idle half the time (perf: 42 % against 19 % of
 * a raw -> qcow2 run's CPU). */
#define READERS 2
#define MAX_CHUNK (16u << 20) /* qemu-img's largest buffer (MAX_BUF_SECTORS) */

typedef struct {
  double target_offset, length, src_offset;
  int src_fd;
} chunk;

typedef struct {
  uint32_t start, count; /* sectors, relative to the chunk */
} run;

/* What a job's thread-safe function carries: its completion, or a chunk to plan. */
enum { MSG_DONE, MSG_PLAN };
typedef struct {
  int kind;
  struct job *job;
  size_t slot;
  unsigned gen;
} message;

typedef struct job {
  napi_threadsafe_function done_fn; /* settles the promise (and plans) on the JS thread */
  message done_msg;
  int planned; /* chunks are planned by JavaScript (copyChunks' planner) */
  napi_deferred deferred;
  int target_fd;
  int64_t target_size;
  uint32_t min_sparse, alignment;
  chunk *chunks;
  size_t count;
  size_t read_next; /* next chunk for the reader */
  size_t in_ring;   /* chunks claimed by the reader and not yet consumed by the writer */
  size_t done;      /* chunks written */
  int failed, error, step;
  napi_env env;    /* the JavaScript thread it belongs to */
  int handed_back; /* settle() was queued: the job is JavaScript's again */
  int orphaned;    /* its environment is being torn down (env_gone()) */
  double *skipped; /* merged byte ranges left out as zeros */
  size_t skipped_len, skipped_cap;
  struct job *next;
} job;

typedef struct {
  int reading;  /* claimed by a reader */
  int read;     /* read, not yet published (chunks are published in order) */
  int filled;   /* published (or planned) for the writer, which sets it back to 0 */
  int planning; /* published, waiting for planCopyChunk() */
  unsigned gen; /* tells a plan for this use of the slot from a late one */
  int error;    /* errno of the read (EIO: short); ECANCELED: no plan */
  job *job;
  size_t index;
  double *writes; /* the plan: 4 numbers per host write */
  size_t nwrites;
  uint8_t *extra; /* the plan's bytes that are not the chunk's */
  size_t extra_len;
  size_t runs;
  run run[MAX_CHUNK / SECTOR + 1]; /* at most one data run per sector */
} slot;

/* The pipeline, shared by every job of the process (the target writes are serialised by the
 * file system anyway). `lock` guards everything but the slot contents, which belong to the
 * reader while empty and to the writer while filled. */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t to_reader; /* a slot freed, a job queued, quit */
  pthread_cond_t to_writer; /* a slot filled, quit */
  pthread_cond_t to_jobs;   /* the pipeline stopped */
  job *head, *tail; /* jobs not finished, in order */
  slot *slots;      /* RING of them */
  uint8_t *buffers; /* RING x MAX_CHUNK, touched only as far as chunks reach */
  size_t rpos;      /* next slot a reader claims */
  size_t ppos;      /* next slot to publish (in order: plans are made in guest order) */
  size_t wpos;      /* next slot the writer consumes */
  pthread_t readers[READERS], writer;
  int nreaders; /* started */
  int started, quit, stopping;
  unsigned gen;
} P = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .to_reader = PTHREAD_COND_INITIALIZER,
    .to_writer = PTHREAD_COND_INITIALIZER,
    .to_jobs = PTHREAD_COND_INITIALIZER,
};

/* ---- qemu-img's run splitting (is_allocated_sectors / is_allocated_sectors_min) ---- */

/* The first index in [from, to) whose zero-map byte is `value`, or `to`. */
static size_t find_in_map(const uint8_t *map, uint8_t value, size_t from, size_t to) {
  const uint8_t *p = memchr(map + from, value, to - from);
  return p ? (size_t)(p - map) : to;
}

/* is_allocated_sectors(): the run at `first` of all-zero or all-data sectors, its end moved to
 * an `alignment` boundary of the guest sector (`sector` is the guest sector of `first`). */
static size_t allocated_run(const uint8_t *map, size_t first, size_t n, uint64_t sector,
                            uint64_t alignment, int *data) {
  if (n == 0) {
    *data = 0;
    return 0;
  }
  int zero = map[first];
  size_t i = find_in_map(map, zero ? 0 : 1, first + 1, first + n) - first;
  if (i == n) {
    *data = !zero;
    return i;
  }
  uint64_t tail = (sector + i) & (alignment - 1);
  if (tail) {
    if (zero && i <= tail) zero = 0;
    if (!zero)
      i = i + alignment - tail < n ? i + alignment - tail : n;
    else
      i -= tail;
  }
  *data = !zero;
  return i;
}

/* is_allocated_sectors_min(): data unless a zero run of at least `min` sectors follows. */
static size_t allocated_run_min(const uint8_t *map, size_t first, size_t n, size_t min,
                                uint64_t sector, uint64_t alignment, int *data) {
  if (n < min) min = n;
  int d;
  size_t num = allocated_run(map, first, n, sector, alignment, &d);
  if (!d) {
    *data = 0;
    return num;
  }
  size_t used = num, checked = num, rest = n - num;
  while (rest > 0) {
    size_t r = allocated_run(map, first + checked, rest, sector + checked, alignment, &d);
    rest -= r;
    checked += r;
    if (d)
      used = checked;
    else if (r >= min)
      break;
  }
  *data = 1;
  return used;
}

/* ---- reader ---- */

static int read_full(int fd, uint8_t *buf, size_t len, int64_t offset) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, offset + (int64_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO; /* the source is shorter than its chunk (it shrank) */
    done += (size_t)n;
  }
  return 0;
}

/* The first queued job with a chunk left to read (under the lock). */
static job *job_to_read(void) {
  for (job *j = P.head; j; j = j->next)
    if (j->read_next < j->count) return j;
  return NULL;
}

static void read_chunk(slot *s, uint8_t *buf, uint8_t *zero_map) {
  const job *j = s->job;
  const chunk *c = &j->chunks[s->index];
  size_t len = (size_t)c->length, sectors = len / SECTOR;
  s->runs = 0;
  s->error = read_full(c->src_fd, buf, len, (int64_t)c->src_offset);
  if (s->error) return;
  mark_zero_sectors(buf, sectors, zero_map);
  uint64_t sector = (uint64_t)(c->target_offset / SECTOR);
  for (size_t first = 0; first < sectors;) {
    int data;
    size_t n = allocated_run_min(zero_map, first, sectors - first, j->min_sparse,
                                 sector + first, j->alignment, &data);
    if (data) s->run[s->runs++] = (run){(uint32_t)first, (uint32_t)n};
    first += n;
  }
}

/* Under the lock: whether a read chunk goes to its planner first. */
static int needs_plan(const slot *s) {
  const job *j = s->job;
  return j->planned && !j->failed && !s->error && s->runs > 0 && !j->orphaned;
}

/* Under the lock: whether a chunk of a job other than j waits for its plan. */
static int planning_other(const job *j) {
  for (size_t i = 0; i < RING; i++)
    if (P.slots[i].planning && P.slots[i].job != j) return 1;
  return 0;
}

/* Under the lock: hand a read chunk to the writer, or first to its planner. */
static void publish(slot *s) {
  job *j = s->job;
  if (needs_plan(s)) {
    message *m = malloc(sizeof(*m));
    s->gen = ++P.gen;
    if (m) {
      *m = (message){MSG_PLAN, j, (size_t)(s - P.slots), s->gen};
      s->planning = 1;
      if (napi_call_threadsafe_function(j->done_fn, m, napi_tsfn_nonblocking) != napi_ok) {
        free(m);
        s->planning = 0;
      }
    }
    if (!s->planning) s->error = ENOMEM;
  }
  if (!s->planning) {
    s->filled = 1;
    pthread_cond_signal(&P.to_writer);
  }
}

/* Under the lock: publish the chunks read, in order (this one, and later ones another reader
 * finished first). Plans must be asked for in guest order, so that clusters are allocated in
 * qemu-img's order; each job has its own thread-safe function, and calls through different
 * ones may reach JavaScript in any order: so a chunk of a job is not sent to be planned while
 * a chunk of another job still waits for its plan. */
static void publish_ready(void) {
  while (P.ppos < P.rpos) {
    slot *s = &P.slots[P.ppos % RING];
    if (!s->read || (needs_plan(s) && planning_other(s->job))) break;
    s->read = 0;
    publish(s);
    P.ppos++;
  }
}

static void *reader_main(void *arg) {
  (void)arg;
  /* SCHED_BATCH: a reader's wakeup does not preempt the writer or the JavaScript thread (the
   * planner), which the copy waits on, while the readers, a RING ahead anyway, take the CPU
   * they leave. Same share of the CPU against other processes as before (nice unchanged), no
   * privilege needed. With 2 cores for 2 readers, a writer and the planner, a 1 GiB raw ->
   * qcow2 convert took 160 ms instead of 173 (21 rounds; qemu-img 167). Best effort. */
  struct sched_param batch = {0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &batch);
  uint8_t *zero_map = malloc(MAX_CHUNK / SECTOR);
  pthread_mutex_lock(&P.lock);
  for (;;) {
    job *j = NULL;
    slot *s = &P.slots[P.rpos % RING];
    while (!P.quit && (s->reading || s->read || s->filled || s->planning || !zero_map ||
                       !(j = job_to_read()))) {
      pthread_cond_wait(&P.to_reader, &P.lock);
      s = &P.slots[P.rpos % RING];
    }
    if (P.quit) break;
    s->job = j;
    s->index = j->read_next++;
    s->reading = 1;
    j->in_ring++;
    uint8_t *buf = P.buffers + (P.rpos % RING) * (size_t)MAX_CHUNK;
    P.rpos++;
    pthread_mutex_unlock(&P.lock);
    read_chunk(s, buf, zero_map);
    pthread_mutex_lock(&P.lock);
    s->reading = 0;
    s->read = 1;
    publish_ready();
    pthread_cond_broadcast(&P.to_reader); /* the other reader may wait for this slot */
  }
  pthread_mutex_unlock(&P.lock);
  free(zero_map);
  return NULL;
}

/* ---- writer ---- */

static int note_skipped(job *j, int64_t start, int64_t end) {
  if (j->skipped_len && j->skipped[j->skipped_len - 1] == (double)start) {
    j->skipped[j->skipped_len - 1] = (double)end;
    return 1;
  }
  if (j->skipped_len + 2 > j->skipped_cap) {
    size_t cap = j->skipped_cap ? j->skipped_cap * 2 : 256;
    double *w = realloc(j->skipped, cap * sizeof(double));
    if (!w) return 0;
    j->skipped = w;
    j->skipped_cap = cap;
  }
  j->skipped[j->skipped_len++] = (double)start;
  j->skipped[j->skipped_len++] = (double)end;
  return 1;
}

static int write_full(int fd, const uint8_t *buf, size_t len, int64_t offset) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, offset + (int64_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return ENOSPC;
    done += (size_t)n;
  }
  return 0;
}

/* Writes the data runs of the chunk in slot s and notes its zero runs; 0 or an errno. */
static int write_runs(job *j, const slot *s, const uint8_t *buf) {
  const chunk *c = &j->chunks[s->index];
  int64_t base = (int64_t)c->target_offset, chunk_end = base + (int64_t)c->length;
  int64_t at = base; /* end of the last data run */
  for (size_t r = 0; r <= s->runs; r++) {
    int64_t start = r < s->runs ? base + (int64_t)s->run[r].start * SECTOR : chunk_end;
    if (start > at && !note_skipped(j, at, start)) return ENOMEM;
    if (r == s->runs) break;
    int64_t len = (int64_t)s->run[r].count * SECTOR;
    at = start + len;
    /* The target may end inside the last sector (sizes that are not sector multiples). */
    if (start + len > j->target_size) len = j->target_size - start;
    if (len <= 0) continue;
    int err = write_full(j->target_fd, buf + (size_t)s->run[r].start * SECTOR, (size_t)len, start);
    if (err) return err;
  }
  return 0;
}

/* A planned chunk's host writes (planCopyChunk()), contiguous ones in one pwritev(). */
static int write_planned(job *j, const slot *s, uint8_t *buf) {
  struct iovec iov[64];
  for (size_t w = 0; w < s->nwrites;) {
    int64_t host = (int64_t)s->writes[4 * w], at = host;
    int n = 0;
    while (w < s->nwrites && n < 64 && (int64_t)s->writes[4 * w] == at) {
      const double *op = s->writes + 4 * w;
      iov[n].iov_base = (op[2] == 0 ? buf : s->extra) + (size_t)op[3];
      iov[n].iov_len = (size_t)op[1];
      at += (int64_t)op[1];
      n++;
      w++;
    }
    struct iovec *v = iov;
    while (n > 0) {
      ssize_t done = pwritev(j->target_fd, v, n, host);
      if (done < 0 && errno == EINTR) continue;
      if (done < 0) return errno;
      if (done == 0) return ENOSPC;
      host += done;
      while (n > 0 && (size_t)done >= v->iov_len) {
        done -= (ssize_t)v->iov_len;
        v++;
        n--;
      }
      if (n > 0) {
        v->iov_base = (uint8_t *)v->iov_base + done;
        v->iov_len -= (size_t)done;
      }
    }
  }
  return 0;
}

static void free_plan(slot *s) {
  free(s->writes);
  free(s->extra);
  s->writes = NULL;
  s->extra = NULL;
  s->nwrites = s->extra_len = 0;
}

/* write_runs(), noting the chunk's zero runs only if all of it was written: a chunk that
 * fails is copied again by the caller, whose own writes decide what stays unwritten. */
static int write_chunk(job *j, const slot *s, const uint8_t *buf) {
  size_t len = j->skipped_len;
  double last = len ? j->skipped[len - 1] : 0; /* note_skipped() may extend the last range */
  int err = write_runs(j, s, buf);
  if (err) {
    j->skipped_len = len;
    if (len) j->skipped[len - 1] = last;
  }
  return err;
}

static void fail(job *j, int error, int step) {
  j->failed = 1;
  j->error = error;
  j->step = step;
  j->read_next = j->count; /* the reader skips the rest */
  /* Its chunks waiting for a plan are not: the writer skips them (a late plan is ignored). */
  for (size_t i = 0; P.slots && i < RING; i++) {
    slot *s = &P.slots[i];
    if (s->planning && s->job == j) {
      s->planning = 0;
      s->filled = 1;
      pthread_cond_signal(&P.to_writer);
    }
  }
  if (P.slots) publish_ready();
}

/* Under the lock: if the job has nothing left in the pipeline, take it off the queue and hand
 * it to its JavaScript thread (settle()). */
static void finish_if_done(job *j) {
  if (j->failed ? j->in_ring != 0 : j->done != j->count) return;
  for (job **p = &P.head; *p; p = &(*p)->next) {
    if (*p == j) {
      *p = j->next;
      if (P.tail == j) {
        P.tail = NULL;
        for (job *t = P.head; t; t = t->next) P.tail = t;
      }
      break;
    }
  }
  if (j->orphaned) {
    pthread_cond_broadcast(&P.to_jobs); /* env_gone() waits for this */
    return;
  }
  j->handed_back = 1;
  napi_call_threadsafe_function(j->done_fn, &j->done_msg, napi_tsfn_nonblocking);
}

static void *writer_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&P.lock);
  for (;;) {
    slot *s = &P.slots[P.wpos % RING];
    while (!P.quit && !s->filled) pthread_cond_wait(&P.to_writer, &P.lock);
    if (P.quit) break;
    job *j = s->job;
    int skip = j->failed;
    pthread_mutex_unlock(&P.lock);
    int err = 0, step = 0;
    if (!skip) {
      if (s->error) {
        err = s->error;
        step = 1;
      } else {
        uint8_t *buf = P.buffers + (P.wpos % RING) * (size_t)MAX_CHUNK;
        err = j->planned ? write_planned(j, s, buf) : write_chunk(j, s, buf);
        step = 2;
      }
    }
    pthread_mutex_lock(&P.lock);
    free_plan(s);
    if (s->error == ECANCELED && j->planned && !skip) /* no plan: the planner failed */
      step = 3;
    if (err && !j->failed) /* the first error stands (ECANCELED included) */
      fail(j, err, step);
    else if (!skip)
      j->done = s->index + 1;
    s->filled = 0;
    P.wpos++;
    j->in_ring--;
    pthread_cond_broadcast(&P.to_reader);
    finish_if_done(j);
  }
  pthread_mutex_unlock(&P.lock);
  return NULL;
}

/* Under the lock: the threads and buffers, on first use. 0 if they cannot be had. */
static int start_pipeline(void) {
  if (P.started) return 1;
  size_t len = (size_t)RING * MAX_CHUNK;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return 0;
#ifdef MADV_HUGEPAGE
  /* A few huge-page faults instead of thousands of small ones: fresh pages cost ~2 us each on
   * a VM whose host takes freed memory back. */
  madvise(p, len, MADV_HUGEPAGE);
#endif
  P.slots = calloc(RING, sizeof(slot));
  if (!P.slots) {
    munmap(p, len);
    return 0;
  }
  P.buffers = p;
  P.rpos = P.ppos = P.wpos = 0;
  P.quit = 0;
  P.nreaders = 0;
  /* One reader is enough to go on with; the writer is not optional. */
  while (P.nreaders < READERS &&
         pthread_create(&P.readers[P.nreaders], NULL, reader_main, NULL) == 0)
    P.nreaders++;
  if (P.nreaders == 0) goto fail;
  if (pthread_create(&P.writer, NULL, writer_main, NULL) != 0) {
    P.quit = 1;
    P.stopping = 1; /* no other start while the readers are joined without the lock */
    pthread_cond_broadcast(&P.to_reader);
    pthread_mutex_unlock(&P.lock);
    for (int i = 0; i < P.nreaders; i++) pthread_join(P.readers[i], NULL);
    pthread_mutex_lock(&P.lock);
    P.stopping = 0;
    pthread_cond_broadcast(&P.to_jobs);
    goto fail;
  }
  P.started = 1;
  return 1;
fail:
  munmap(P.buffers, len);
  free(P.slots);
  P.buffers = NULL;
  P.slots = NULL;
  return 0;
}

/* ---- Node-API ---- */

static void free_job(job *j) {
  free(j->skipped);
  free(j->chunks);
  free(j);
}

static void env_gone(void *data);

/* Under the lock: a chunk waiting for a plan gets none (the writer fails its job). */
static void plan_refused(slot *s) {
  s->error = ECANCELED;
  s->planning = 0;
  s->filled = 1;
  pthread_cond_signal(&P.to_writer);
  publish_ready();
}

/* The slot a message or planCopyChunk() names, if it still waits for that plan (under the
 * lock). */
static slot *waiting_slot(size_t index, unsigned gen) {
  if (!P.slots || index >= RING) return NULL;
  slot *s = &P.slots[index];
  return s->planning && s->gen == gen ? s : NULL;
}

/* On the job's JavaScript thread: hand a chunk's data runs to its planner. */
static void call_planner(napi_env env, napi_value planner, const message *m) {
  pthread_mutex_lock(&P.lock);
  slot *s = waiting_slot(m->slot, m->gen);
  size_t n = s ? s->runs : 0, index = s ? s->index : 0;
  uint32_t *runs = n ? malloc(n * 2 * sizeof(uint32_t)) : NULL;
  for (size_t r = 0; runs && r < n; r++) {
    runs[2 * r] = s->run[r].start;
    runs[2 * r + 1] = s->run[r].count;
  }
  if (s && !runs) plan_refused(s);
  pthread_mutex_unlock(&P.lock);
  if (!runs) return;
  napi_value ab, arr, argv[4], undefined;
  void *p;
  int ok = napi_create_arraybuffer(env, n * 2 * sizeof(uint32_t), &p, &ab) == napi_ok &&
           napi_create_typedarray(env, napi_uint32_array, n * 2, ab, 0, &arr) == napi_ok &&
           napi_create_uint32(env, (uint32_t)m->slot, &argv[0]) == napi_ok &&
           napi_create_uint32(env, m->gen, &argv[1]) == napi_ok &&
           napi_create_double(env, (double)index, &argv[2]) == napi_ok &&
           napi_get_undefined(env, &undefined) == napi_ok;
  if (ok) {
    memcpy(p, runs, n * 2 * sizeof(uint32_t));
    argv[3] = arr;
    ok = napi_call_function(env, undefined, planner, 4, argv, NULL) == napi_ok;
  }
  free(runs);
  if (!ok) {
    /* The planner threw (it should not: it answers with planCopyChunk(null)): no plan. */
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
    pthread_mutex_lock(&P.lock);
    if ((s = waiting_slot(m->slot, m->gen))) plan_refused(s);
    pthread_mutex_unlock(&P.lock);
  }
}

/* On the job's JavaScript thread: settle its promise, or plan a chunk. env is NULL when that
 * thread is gone. */
static void settle(napi_env env, napi_value js_fn, void *context, void *data) {
  message *m = data;
  job *j = m->job;
  (void)context;
  if (m->kind == MSG_PLAN) {
    if (env) call_planner(env, js_fn, m);
    free(m);
    return;
  }
  if (env) {
    napi_remove_env_cleanup_hook(env, env_gone, j);
    napi_value ab, result;
    void *p;
    size_t n = 3 + j->skipped_len;
    if (napi_create_arraybuffer(env, n * sizeof(double), &p, &ab) == napi_ok &&
        napi_create_typedarray(env, napi_float64_array, n, ab, 0, &result) == napi_ok) {
      double *out = p;
      out[0] = (double)j->done;
      out[1] = j->error;
      out[2] = j->step;
      if (j->skipped_len) memcpy(out + 3, j->skipped, j->skipped_len * sizeof(double));
      napi_resolve_deferred(env, j->deferred, result);
    } else {
      napi_value err, msg;
      napi_create_string_utf8(env, "copyChunks: out of memory", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, NULL, msg, &err);
      napi_reject_deferred(env, j->deferred, err);
    }
  }
  napi_release_threadsafe_function(j->done_fn, napi_tsfn_release);
  free_job(j);
}

/* The job's environment is being torn down (a worker thread ends, the process exits) while the
 * job may still be queued: its descriptors are about to be closed and their numbers reused, so
 * its I/O must end now. Runs before its thread-safe function is torn down (cleanup hooks run in
 * reverse order of registration, and this one was added after it). */
static void env_gone(void *data) {
  job *j = data;
  pthread_mutex_lock(&P.lock);
  if (j->handed_back) {
    /* settle() is queued; the thread-safe function's teardown calls it (env NULL) to free. */
    pthread_mutex_unlock(&P.lock);
    return;
  }
  /* Every queued job of this environment ends now, not only this one: the writer goes in
   * order, and an older job's chunk waiting for a plan would never get it (this thread is
   * going away), while that job's own hook runs only after this one (newest first). */
  for (job *t = P.head; t; t = t->next) {
    if (t->env != j->env) continue;
    t->orphaned = 1;
    if (!t->failed) fail(t, ECANCELED, 0);
  }
  for (;;) {
    int queued = 0;
    for (job *t = P.head; t; t = t->next)
      if (t == j) queued = 1;
    if (!queued) break;
    finish_if_done(j); /* nothing in the ring: off the queue now */
    if (j->in_ring) pthread_cond_wait(&P.to_jobs, &P.lock);
  }
  pthread_mutex_unlock(&P.lock);
  free_job(j);
}

static napi_value copy_chunks(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], promise, name;
  napi_valuetype planner_type = napi_undefined;
  int32_t fd;
  double size;
  uint32_t min_sparse, alignment;
  napi_typedarray_type type;
  size_t n, byte_offset;
  void *p;
  napi_value ab;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &size) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &type, &n, &p, &ab, &byte_offset) != napi_ok ||
      type != napi_float64_array || n == 0 || n % 4 != 0 ||
      napi_get_value_uint32(env, argv[3], &min_sparse) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &alignment) != napi_ok || min_sparse == 0 ||
      alignment == 0 || (alignment & (alignment - 1)) != 0 || !(size >= 0) ||
      (argc > 5 && napi_typeof(env, argv[5], &planner_type) != napi_ok) ||
      (planner_type != napi_undefined && planner_type != napi_function)) {
    napi_throw_type_error(env, NULL, "copyChunks: bad arguments");
    return NULL;
  }
  const double *in = p;
  for (size_t i = 0; i < n; i += 4) {
    double off = in[i], len = in[i + 1], src_fd = in[i + 2], src_off = in[i + 3];
    if (!(off >= 0 && len > 0 && len <= MAX_CHUNK && src_off >= 0 && src_fd >= 0) ||
        (uint64_t)len % SECTOR || (uint64_t)off % SECTOR || off + len > 9007199254740991.0 ||
        src_off + len > 9007199254740991.0) {
      napi_throw_range_error(env, NULL, "copyChunks: bad chunk");
      return NULL;
    }
  }
  job *j = calloc(1, sizeof(*j));
  if (!j || !(j->chunks = malloc(n / 4 * sizeof(chunk)))) {
    free(j);
    napi_throw_error(env, NULL, "copyChunks: out of memory");
    return NULL;
  }
  j->count = n / 4;
  for (size_t i = 0; i < j->count; i++)
    j->chunks[i] = (chunk){in[4 * i], in[4 * i + 1], in[4 * i + 3], (int)in[4 * i + 2]};
  j->target_fd = fd;
  j->target_size = (int64_t)size;
  j->min_sparse = min_sparse;
  j->alignment = alignment;
  j->planned = planner_type == napi_function;
  j->env = env;
  j->done_msg = (message){MSG_DONE, j, 0, 0};
  napi_create_string_utf8(env, "vmforge:copyChunks", NAPI_AUTO_LENGTH, &name);
  /* Keeps the event loop alive until the job is settled. */
  if (napi_create_threadsafe_function(env, j->planned ? argv[5] : NULL, NULL, name, 0, 1, NULL,
                                      NULL, NULL, settle, &j->done_fn) != napi_ok) {
    free_job(j);
    napi_throw_error(env, NULL, "copyChunks: cannot create its completion callback");
    return NULL;
  }
  napi_create_promise(env, &j->deferred, &promise);
  napi_add_env_cleanup_hook(env, env_gone, j);
  pthread_mutex_lock(&P.lock);
  while (P.stopping) pthread_cond_wait(&P.to_jobs, &P.lock); /* releaseCopyBuffers() joining */
  if (!start_pipeline()) {
    fail(j, ENOMEM, 1);
    j->handed_back = 1;
    pthread_mutex_unlock(&P.lock);
    napi_call_threadsafe_function(j->done_fn, &j->done_msg, napi_tsfn_nonblocking);
    return promise;
  }
  if (P.tail)
    P.tail->next = j;
  else
    P.head = j;
  P.tail = j;
  pthread_cond_broadcast(&P.to_reader);
  pthread_mutex_unlock(&P.lock);
  return promise;
}

/* A typed array argument's bytes, or NULL for null/undefined; -1 when it is something else. */
static int typed_arg(napi_env env, napi_value v, napi_typedarray_type want, void **data,
                     size_t *len) {
  napi_valuetype t;
  *data = NULL;
  *len = 0;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_null || t == napi_undefined) return 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) != napi_ok || type != want)
    return -1;
  return 1;
}

static napi_value plan_copy_chunk(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  uint32_t index, gen;
  void *w_in, *x_in;
  size_t nw, nx;
  int has_w;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_uint32(env, argv[0], &index) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &gen) != napi_ok ||
      (has_w = typed_arg(env, argv[2], napi_float64_array, &w_in, &nw)) < 0 ||
      typed_arg(env, argv[3], napi_uint8_array, &x_in, &nx) < 0 || nw % 4 != 0) {
    napi_throw_type_error(env, NULL, "planCopyChunk: bad arguments");
    return NULL;
  }
  /* Copied outside the lock: the arrays stay JavaScript's. */
  double *writes = nw ? malloc(nw * sizeof(double)) : NULL;
  uint8_t *extra = nx ? malloc(nx) : NULL;
  int nomem = (nw && !writes) || (nx && !extra);
  if (writes) memcpy(writes, w_in, nw * sizeof(double));
  if (extra) memcpy(extra, x_in, nx);
  const char *bad = nomem ? "planCopyChunk: out of memory" : NULL;
  pthread_mutex_lock(&P.lock);
  slot *s = waiting_slot(index, gen);
  if (s && has_w && !bad) {
    double chunk_len = s->job->chunks[s->index].length;
    for (size_t i = 0; i < nw && !bad; i += 4) {
      double host = writes[i], len = writes[i + 1], src = writes[i + 2], off = writes[i + 3];
      double limit = src == 0 ? chunk_len : (double)nx;
      if (!(host >= 0 && len > 0 && off >= 0 && (src == 0 || src == 1) && off + len <= limit &&
            host + len <= 9007199254740991.0 && host == (double)(int64_t)host &&
            len == (double)(size_t)len && off == (double)(size_t)off))
        bad = "planCopyChunk: bad write";
    }
  }
  if (s && has_w && !bad) {
    s->writes = writes;
    s->nwrites = nw / 4;
    s->extra = extra;
    s->extra_len = nx;
    writes = NULL;
    extra = NULL;
    s->planning = 0;
    s->filled = 1;
    pthread_cond_signal(&P.to_writer);
    publish_ready();
  } else if (s) {
    plan_refused(s);
  }
  pthread_mutex_unlock(&P.lock);
  free(writes);
  free(extra);
  if (bad) napi_throw_range_error(env, NULL, bad);
  return NULL;
}

static napi_value cancel_chunks(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok)
    return NULL;
  pthread_mutex_lock(&P.lock);
  for (job *j = P.head, *next; j; j = next) {
    next = j->next;
    if (j->target_fd != fd || j->failed) continue;
    fail(j, ECANCELED, 0);
    finish_if_done(j); /* otherwise the writer does, once its chunks in the ring are consumed */
  }
  pthread_mutex_unlock(&P.lock);
  return NULL;
}

static napi_value release_buffers(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  pthread_mutex_lock(&P.lock);
  /* A job still queued (another copy of this process) keeps the pipeline. */
  if (!P.started || P.head) {
    pthread_mutex_unlock(&P.lock);
    return NULL;
  }
  P.quit = 1;
  P.started = 0;
  P.stopping = 1;
  pthread_cond_broadcast(&P.to_reader);
  pthread_cond_broadcast(&P.to_writer);
  pthread_mutex_unlock(&P.lock);
  for (int i = 0; i < P.nreaders; i++) pthread_join(P.readers[i], NULL);
  pthread_join(P.writer, NULL);
  pthread_mutex_lock(&P.lock);
  munmap(P.buffers, (size_t)RING * MAX_CHUNK);
  for (size_t i = 0; i < RING; i++) free_plan(&P.slots[i]);
  free(P.slots);
  P.buffers = NULL;
  P.slots = NULL;
  P.quit = 0;
  P.stopping = 0;
  pthread_cond_broadcast(&P.to_jobs);
  pthread_mutex_unlock(&P.lock);
  return NULL;
}

void register_copychunks(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"copyChunks", NULL, copy_chunks, NULL, NULL, NULL, napi_default, NULL},
      {"planCopyChunk", NULL, plan_copy_chunk, NULL, NULL, NULL, napi_default, NULL},
      {"cancelCopyChunks", NULL, cancel_chunks, NULL, NULL, NULL, napi_default, NULL},
      {"releaseCopyBuffers", NULL, release_buffers, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
