/*
 * vmforge_native: the few Linux file operations Node's fs does not expose, which QEMU's
 * file-posix driver relies on: lseek(SEEK_DATA/SEEK_HOLE) for allocation status of sparse
 * files, and fallocate(PUNCH_HOLE / ZERO_RANGE) for discard and efficient zeroing; plus
 * preadv2(RWF_NOWAIT), which reads data already in the page cache without the thread-pool
 * round trip of Node's asynchronous fs (and never blocks on disk I/O).
 * Optional: vmforge falls back to pure JavaScript when this addon is not built.
 * Node-API only, so one build works on every Node version with N-API 8.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"extent", NULL, extent, NULL, NULL, NULL, napi_default, NULL},
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_default, NULL},
      {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_default, NULL},
      {"allocate", NULL, allocate, NULL, NULL, NULL, napi_default, NULL},
      {"readNoWait", NULL, read_nowait, NULL, NULL, NULL, napi_default, NULL},
      {"pageOffset", NULL, page_offset, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
