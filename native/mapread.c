/*
 * Mapped reads for bulk copies (vmforge-img convert): a source range is mmap()ed and
 * populated on a libuv pool thread, its 512-byte sectors are classified zero / non-zero there,
 * and the main thread writes the target straight from the mapping. Compared with read() into a
 * buffer this saves one copy of every byte through the CPU, which on a memory-bound 2-core
 * machine is a third of a raw -> qcow2 convert's copy time (docs/img-convert.md).
 *
 * Safety: a mapped file that shrinks under us raises SIGBUS on access. The scan below runs
 * under a SIGBUS guard that jumps back out and reports the range as not mappable, so the caller
 * reads it the ordinary way; write() from a mapping whose pages vanished fails with EFAULT
 * instead of a signal. The zero map is computed here so that JavaScript does not read the
 * mapping; where it still does (a qcow2 target copying part of a cluster), a SIGBUS inside a
 * live mapping ends the process with a message naming the cause instead of a bare
 * "Bus error".
 *
 *   mapRead(fd, offset, length, zeroMap: Uint8Array | null) -> Promise<Uint8Array | undefined>
 *     A view of `length` bytes at file `offset`; zeroMap[i] = 1 when sector i is all zeros
 *     (zeroMap.length >= ceil(length / 512)). undefined when the range cannot be mapped (past
 *     the end of the file, a file type without mmap, an old kernel, the file shrank).
 *   unmap(view) -> undefined
 *     Detaches the view's buffer (JavaScript then sees it empty); the next mapRead() unmaps it
 *     on the thread pool (see retire()). Without unmap() the garbage collector unmaps it.
 *   flushUnmapped() -> undefined
 *     Unmaps on the thread pool what unmap() left waiting (called at the end of a copy).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sectors.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif


/* One live mapping; the buffer's finalizer and unmap() share it (whichever comes first unmaps). */
typedef struct mapping {
  void *base;
  size_t len;
  int unmapped;
  struct mapping *next;
} mapping;

/* Live mappings of this thread's Node-API environment: complete, unmap and the finalizers run on
 * the JS thread that made them (each worker thread has its own list). Initial-exec TLS, so the
 * signal handler may read it. */
static __thread __attribute__((tls_model("initial-exec"))) mapping *live;

/* Mappings JavaScript is done with (unmap()), left for the pool: the next mapRead job unmaps
 * them before it maps its own range. munmap() of 2 MiB of page-cache pages costs ~85 us (page
 * references, TLB shootdown), too much for the main thread; an N-API async work per unmap (what
 * this replaced) still cost the main thread ~25 us each for its async resource, ~5 ms of a
 * 1 GiB convert. At most RETIRED_MAX wait (the last few of a copy wait for the next mapRead or
 * the process's exit); past that, unmap() unmaps on the spot. One list for all threads:
 * munmap() is process-wide. */
#define RETIRED_MAX 32
typedef struct retired {
  void *base;
  size_t len;
  struct retired *next;
} retired;
static pthread_mutex_t retired_lock = PTHREAD_MUTEX_INITIALIZER;
static retired *retired_head;
static int retired_count;

static void retire(void *base, size_t len) {
  retired *r = malloc(sizeof(*r));
  if (r) {
    pthread_mutex_lock(&retired_lock);
    if (retired_count < RETIRED_MAX) {
      r->base = base;
      r->len = len;
      r->next = retired_head;
      retired_head = r;
      retired_count++;
      pthread_mutex_unlock(&retired_lock);
      return;
    }
    pthread_mutex_unlock(&retired_lock);
    free(r);
  }
  munmap(base, len);
}

static void unmap_retired(void) {
  pthread_mutex_lock(&retired_lock);
  retired *r = retired_head;
  retired_head = NULL;
  retired_count = 0;
  pthread_mutex_unlock(&retired_lock);
  while (r) {
    retired *next = r->next;
    munmap(r->base, r->len);
    free(r);
    r = next;
  }
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref zero_ref;
  int fd;
  int64_t offset;
  size_t length;
  uint8_t *zero_map;
  void *base;
  size_t map_len;
  size_t delta;
  int ok;
} map_job;

/* Volatile, with signal fences around the scan: the scan's loop makes no calls, so a plain
 * store of the jump target would be dropped as dead by the compiler. */
static __thread __attribute__((tls_model("initial-exec"))) sigjmp_buf *volatile scan_jump;
static struct sigaction previous_bus;
static atomic_int guard_state; /* 0 not installed, 1 installing, 2 installed */

static void on_sigbus(int sig, siginfo_t *info, void *ctx) {
  sigjmp_buf *jump = scan_jump;
  if (jump) siglongjmp(*jump, 1);
  /* This thread's list; it is changed only between JavaScript calls, never while JavaScript
   * reads a mapping. */
  for (mapping *m = live; m; m = m->next) {
    uintptr_t a = (uintptr_t)info->si_addr, b = (uintptr_t)m->base;
    if (!m->unmapped && a >= b && a < b + m->len) {
      static const char msg[] =
          "vmforge: a source file shrank while it was being copied (SIGBUS in its mapping)\n";
      ssize_t r = write(2, msg, sizeof(msg) - 1);
      (void)r;
      _exit(1);
    }
  }
  /* Not ours: hand it to the previous handler. With the default disposition, restore it and
   * raise: the signal is delivered as soon as this handler returns (a fault would also recur
   * on the faulting instruction), so the process ends as it would have without us. */
  if (previous_bus.sa_flags & SA_SIGINFO) {
    previous_bus.sa_sigaction(sig, info, ctx);
  } else if (previous_bus.sa_handler == SIG_IGN) {
    return;
  } else if (previous_bus.sa_handler != SIG_DFL) {
    previous_bus.sa_handler(sig);
  } else {
    sigaction(SIGBUS, &previous_bus, NULL);
    raise(SIGBUS);
  }
}

static void install_guard(void) {
  int expected = 0;
  /* Once per process, also when several worker threads load the addon. */
  if (!atomic_compare_exchange_strong(&guard_state, &expected, 1)) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &previous_bus);
  atomic_store(&guard_state, 2);
}

/* Fill zero_map for the range; 0 if a SIGBUS stopped it. */
static int scan_zeros(const uint8_t *p, size_t length, uint8_t *zero_map) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1)) {
    scan_jump = NULL;
    return 0;
  }
  scan_jump = &jump;
  atomic_signal_fence(memory_order_seq_cst);
  size_t sectors = length / SECTOR;
  mark_zero_sectors(p, sectors, zero_map);
  if (length % SECTOR) {
    /* A partial last sector: zero when its bytes are (the rest reads as zeros). */
    const uint8_t *q = p + sectors * SECTOR;
    uint8_t z = 1;
    for (size_t i = 0; i < length % SECTOR; i++)
      if (q[i]) z = 0;
    zero_map[sectors] = z;
  }
  atomic_signal_fence(memory_order_seq_cst);
  scan_jump = NULL;
  return 1;
}

static void map_execute(napi_env env, void *data) {
  map_job *job = data;
  (void)env;
  unmap_retired();
  struct stat st;
  if (fstat(job->fd, &st) != 0 || !S_ISREG(st.st_mode) || job->offset < 0 ||
      (uint64_t)job->offset + job->length > (uint64_t)st.st_size)
    return;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  job->delta = (size_t)job->offset % page;
  job->map_len = job->delta + job->length;
  void *base = mmap(NULL, job->map_len, PROT_READ, MAP_SHARED, job->fd, job->offset - (off_t)job->delta);
  if (base == MAP_FAILED) return;
  /* Fault every page in now, on this thread (reading from disk when not cached); fails instead
   * of raising SIGBUS when the file is shorter than the mapping. */
  int r;
  do {
    r = madvise(base, job->map_len, MADV_POPULATE_READ);
  } while (r != 0 && errno == EINTR);
  if (r != 0 ||
      (job->zero_map && !scan_zeros((const uint8_t *)base + job->delta, job->length, job->zero_map))) {
    munmap(base, job->map_len);
    return;
  }
  job->base = base;
  job->ok = 1;
}

static void finalize_mapping(napi_env env, void *data, void *hint) {
  mapping *m = hint;
  (void)env;
  (void)data;
  if (!m->unmapped) munmap(m->base, m->len);
  for (mapping **p = &live; *p; p = &(*p)->next) {
    if (*p == m) {
      *p = m->next;
      break;
    }
  }
  free(m);
}

static void map_complete(napi_env env, napi_status status, void *data) {
  map_job *job = data;
  napi_value result = NULL;
  if (status == napi_ok && job->ok) {
    mapping *m = malloc(sizeof(*m));
    napi_value ab;
    if (m) {
      m->base = job->base;
      m->len = job->map_len;
      m->unmapped = 0;
      m->next = live;
      live = m;
      if (napi_create_external_arraybuffer(env, job->base, job->map_len, finalize_mapping, m, &ab) !=
          napi_ok) {
        /* No buffer owns the mapping: release it here. */
        live = m->next;
        munmap(job->base, job->map_len);
        free(m);
      } else if (napi_create_typedarray(env, napi_uint8_array, job->length, ab, job->delta,
                                        &result) != napi_ok) {
        result = NULL; /* the buffer's finalizer unmaps it */
      }
    } else {
      munmap(job->base, job->map_len);
    }
  }
  if (!result) napi_get_undefined(env, &result);
  napi_resolve_deferred(env, job->deferred, result);
  if (job->zero_ref) napi_delete_reference(env, job->zero_ref);
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value map_read(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], promise, name;
  int32_t fd;
  double offset, length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &offset) != napi_ok ||
      napi_get_value_double(env, argv[2], &length) != napi_ok || offset < 0 || length <= 0)
    return NULL;
  map_job *job = calloc(1, sizeof(*job));
  if (!job) return NULL;
  job->fd = fd;
  job->offset = (int64_t)offset;
  job->length = (size_t)length;
  napi_valuetype t;
  napi_typeof(env, argv[3], &t);
  if (t == napi_object) {
    napi_typedarray_type type;
    size_t n, byte_offset;
    void *p;
    napi_value ab;
    if (napi_get_typedarray_info(env, argv[3], &type, &n, &p, &ab, &byte_offset) != napi_ok ||
        type != napi_uint8_array || n < (job->length + SECTOR - 1) / SECTOR) {
      free(job);
      napi_throw_range_error(env, NULL, "mapRead: zero map too small");
      return NULL;
    }
    job->zero_map = p;
    napi_create_reference(env, argv[3], 1, &job->zero_ref);
  }
  install_guard();
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "vmforge:mapRead", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, map_execute, map_complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

/* flushUnmapped(): unmap on the pool whatever unmap() left waiting, at the end of a copy (a
 * long-running process should not keep the last chunks' mappings until its next copy). */
typedef struct {
  napi_async_work work;
} flush_job;

static void flush_execute(napi_env env, void *data) {
  (void)env;
  (void)data;
  unmap_retired();
}

static void flush_complete(napi_env env, napi_status status, void *data) {
  flush_job *job = data;
  (void)status;
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value flush_unmapped(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value name;
  flush_job *job = malloc(sizeof(*job));
  if (!job) {
    unmap_retired();
    return NULL;
  }
  napi_create_string_utf8(env, "vmforge:flushUnmapped", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, flush_execute, flush_complete, job, &job->work) !=
          napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    free(job);
    unmap_retired();
  }
  return NULL;
}

static napi_value unmap(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], ab;
  napi_typedarray_type type;
  size_t n, byte_offset, ab_len;
  void *p, *data;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_typedarray_info(env, argv[0], &type, &n, &p, &ab, &byte_offset) != napi_ok ||
      napi_get_arraybuffer_info(env, ab, &data, &ab_len) != napi_ok)
    return NULL;
  for (mapping *m = live; m; m = m->next) {
    if (m->base == data && !m->unmapped) {
      /* Detach first: from here on JavaScript sees an empty buffer, never the unmapped pages. */
      if (napi_detach_arraybuffer(env, ab) != napi_ok) return NULL;
      m->unmapped = 1;
      retire(m->base, m->len);
      break;
    }
  }
  return NULL;
}

void register_mapread(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"mapRead", NULL, map_read, NULL, NULL, NULL, napi_default, NULL},
      {"unmap", NULL, unmap, NULL, NULL, NULL, napi_default, NULL},
      {"flushUnmapped", NULL, flush_unmapped, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
