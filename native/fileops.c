/*
 * vmforge_native: the few Linux file operations Node's fs does not expose, which QEMU's
 * file-posix driver relies on: lseek(SEEK_DATA/SEEK_HOLE) for allocation status of sparse
 * files, and fallocate(PUNCH_HOLE / ZERO_RANGE) for discard and efficient zeroing; plus
 * preadv2(RWF_NOWAIT), which reads data already in the page cache without the thread-pool
 * round trip of Node's asynchronous fs (and never blocks on disk I/O).
 * For NBD READ replies from raw exports: cachestat() to learn that a range is in the page
 * cache, and sendfile() of that range to the client socket (the kernel hands page-cache pages
 * to the socket instead of copying them twice through a user buffer).
 * For convert: mapped reads of source files (mapread.c), and the copy loop into a raw target
 * (copychunks.c).
 * Optional: vmforge falls back to pure JavaScript when this addon is not built.
 * Node-API only, so one build works on every Node version with N-API 8.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/falloc.h>

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  *out = (int64_t)d;
  return 1;
}

static int args3(napi_env env, napi_callback_info info, int64_t *a, int64_t *b, int64_t *c) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) return 0;
  return get_i64(env, argv[0], a) && get_i64(env, argv[1], b) && get_i64(env, argv[2], c);
}

static napi_value make_bool(napi_env env, int b) {
  napi_value r;
  napi_get_boolean(env, b, &r);
  return r;
}

/* extent(fd, offset, length) -> { hole, length } or undefined when unknown. */
static napi_value extent(napi_env env, napi_callback_info info) {
  int64_t fd, off, len;
  napi_value undef;
  napi_get_undefined(env, &undef);
  if (!args3(env, info, &fd, &off, &len) || len <= 0) return undef;
  int hole;
  int64_t run;
  off_t data = lseek((int)fd, (off_t)off, SEEK_DATA);
  if (data < 0) {
    if (errno != ENXIO) return undef; /* no SEEK_DATA support */
    hole = 1;                          /* no data after off: hole to EOF and beyond */
    run = len;
  } else if (data > off) {
    hole = 1;
    run = data - off;
  } else {
    off_t h = lseek((int)fd, (off_t)off, SEEK_HOLE);
    if (h < 0) return undef;
    hole = 0;
    run = h - off;
  }
  if (run > len) run = len;
  if (run <= 0) return undef;
  napi_value obj, vh, vl;
  napi_create_object(env, &obj);
  napi_get_boolean(env, hole, &vh);
  napi_create_double(env, (double)run, &vl);
  napi_set_named_property(env, obj, "hole", vh);
  napi_set_named_property(env, obj, "length", vl);
  return obj;
}

static napi_value do_fallocate(napi_env env, napi_callback_info info, int mode) {
  int64_t fd, off, len;
  if (!args3(env, info, &fd, &off, &len)) return make_bool(env, 0);
  int r;
  do {
    r = fallocate((int)fd, mode, (off_t)off, (off_t)len);
  } while (r < 0 && errno == EINTR);
  return make_bool(env, r == 0);
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
}

static napi_value zero_range(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_ZERO_RANGE);
}

static napi_value allocate(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, 0);
}

static napi_value preallocate(napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_KEEP_SIZE);
}

/*
 * readNoWait(fd, uint8array, offset) -> bytes read (0 at EOF), -1 when the data is not all in the
 * page cache (EAGAIN: the caller reads asynchronously), -2 when the kernel or file system lacks
 * RWF_NOWAIT (the caller stops trying).
 */
static napi_value read_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_value out;
  double result = -2;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 3) {
    int32_t fd;
    double off;
    napi_typedarray_type type;
    size_t length, byte_offset;
    void *data;
    napi_value ab;
    if (napi_get_value_int32(env, argv[0], &fd) == napi_ok &&
        napi_get_value_double(env, argv[2], &off) == napi_ok &&
        napi_get_typedarray_info(env, argv[1], &type, &length, &data, &ab, &byte_offset) ==
            napi_ok &&
        type == napi_uint8_array) {
      struct iovec iov = {data, length};
      ssize_t n;
      do {
        n = preadv2(fd, &iov, 1, (off_t)off, RWF_NOWAIT);
      } while (n < 0 && errno == EINTR);
      if (n >= 0)
        result = (double)n;
      else
        result = (errno == EAGAIN) ? -1 : -2;
    }
  }
  napi_create_double(env, result, &out);
  return out;
}

/*
 * pageOffset(uint8array) -> the address of its first byte modulo 4096 (-1 if not a Uint8Array),
 * so that I/O buffers can be placed where the kernel's page-cache copies run fastest.
 */
static napi_value page_offset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value out;
  double result = -1;
  napi_typedarray_type type;
  size_t length, byte_offset;
  void *data;
  napi_value ab;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 1 &&
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &byte_offset) ==
          napi_ok &&
      type == napi_uint8_array)
    result = (double)((uintptr_t)data & 4095);
  napi_create_double(env, result, &out);
  return out;
}

/* cachestat(2), Linux >= 6.5; 451 in the unified syscall table (x86, arm, arm64, riscv, ...;
 * elsewhere the call fails with ENOSYS and the caller stops using it). */
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
struct vmforge_cachestat_range {
  uint64_t off, len;
};
struct vmforge_cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/*
 * cached(fd, offset, length) -> 1 when every page of the range is in the page cache, 0 when
 * some page is not, -1 when cachestat() fails (no such call, or not allowed: the caller stops
 * asking).
 */
static napi_value cached(napi_env env, napi_callback_info info) {
  int64_t fd, off, len;
  napi_value out;
  double result = 0;
  if (args3(env, info, &fd, &off, &len) && off >= 0 && len > 0) {
    long page = sysconf(_SC_PAGESIZE);
    struct vmforge_cachestat_range range = {(uint64_t)off, (uint64_t)len};
    struct vmforge_cachestat cs;
    if (syscall(SYS_cachestat, (int)fd, &range, &cs, 0) == 0) {
      uint64_t pages = (uint64_t)((off + len + page - 1) / page - off / page);
      result = cs.nr_cache >= pages ? 1 : 0;
    } else {
      result = -1;
    }
  }
  napi_create_double(env, result, &out);
  return out;
}

/*
 * sendFileRange(sockfd, header, fd, offset, length, out: Float64Array(2)) -> undefined; out[0] = bytes
 * of header and data sent, out[1] = 0, or the errno that stopped it other than EAGAIN (a full
 * socket is not an error: the caller continues when it drains). Never blocks on the socket
 * (MSG_DONTWAIT; libuv made it non-blocking). The header goes first with MSG_MORE, then
 * sendfile() of the file range. SIGPIPE cannot stop the process: Node ignores it.
 */
static napi_value send_file(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  int32_t sock, fd;
  double offd, lend;
  napi_typedarray_type type, otype;
  size_t hlen, olen, byte_offset;
  void *hdr, *outp;
  napi_value ab;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 ||
      napi_get_value_int32(env, argv[0], &sock) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &hlen, &hdr, &ab, &byte_offset) != napi_ok ||
      type != napi_uint8_array || napi_get_value_int32(env, argv[2], &fd) != napi_ok ||
      napi_get_value_double(env, argv[3], &offd) != napi_ok ||
      napi_get_value_double(env, argv[4], &lend) != napi_ok || offd < 0 || lend < 0 ||
      napi_get_typedarray_info(env, argv[5], &otype, &olen, &outp, &ab, &byte_offset) != napi_ok ||
      otype != napi_float64_array || olen < 2)
    return NULL;
  double *out = (double *)outp;
  size_t sent = 0;
  int err = 0;
  while (sent < hlen) {
    ssize_t n = send(sock, (char *)hdr + sent, hlen - sent, MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    sent += (size_t)n;
  }
  if (sent == hlen) {
    off_t pos = (off_t)offd;
    size_t left = (size_t)lend;
    while (left > 0) {
      ssize_t n = sendfile(sock, fd, &pos, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        err = errno;
        break;
      }
      if (n == 0) break; /* end of file: the caller sends the rest (zeros) */
      sent += (size_t)n;
      left -= (size_t)n;
    }
  }
  out[0] = (double)sent;
  out[1] = (err == EAGAIN || err == EWOULDBLOCK) ? 0 : (double)err;
  return NULL;
}

/* setSendBuffer(sockfd, bytes) -> the send buffer size now in effect (SO_SNDBUF), -1 on error. */
static napi_value set_send_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_value out;
  double result = -1;
  int32_t sock, want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 2 &&
      napi_get_value_int32(env, argv[0], &sock) == napi_ok &&
      napi_get_value_int32(env, argv[1], &want) == napi_ok) {
    int have = 0;
    socklen_t len = sizeof(have);
    if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &have, &len) == 0) {
      /* Linux doubles the value for bookkeeping and caps it at net.core.wmem_max. */
      if (have < want) setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
      len = sizeof(have);
      if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &have, &len) == 0) result = have;
    }
  }
  napi_create_double(env, result, &out);
  return out;
}

void register_mapread(napi_env env, napi_value exports);    /* mapread.c */
void register_copychunks(napi_env env, napi_value exports); /* copychunks.c */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"extent", NULL, extent, NULL, NULL, NULL, napi_default, NULL},
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_default, NULL},
      {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_default, NULL},
      {"allocate", NULL, allocate, NULL, NULL, NULL, napi_default, NULL},
      {"preallocate", NULL, preallocate, NULL, NULL, NULL, napi_default, NULL},
      {"readNoWait", NULL, read_nowait, NULL, NULL, NULL, napi_default, NULL},
      {"pageOffset", NULL, page_offset, NULL, NULL, NULL, napi_default, NULL},
      {"cached", NULL, cached, NULL, NULL, NULL, napi_default, NULL},
      {"sendFileRange", NULL, send_file, NULL, NULL, NULL, napi_default, NULL},
      {"setSendBuffer", NULL, set_send_buffer, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  register_mapread(env, exports);
  register_copychunks(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
