/*
 * vmforge_zstd: one-shot zstd compression of qcow2 clusters with a reused context.
 * Node's zlib.zstdCompressSync() builds a stream object and a compression context for every
 * call, which costs ~0.5 ms per 64 KiB cluster; the compression itself takes ~0.04 ms.
 * The running Node binary (>= 22.15) already contains libzstd and exports its symbols, so we
 * declare the few functions we call instead of needing zstd headers or a library at build time.
 * Optional: vmforge falls back to node:zlib when this addon is missing or does not load.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stddef.h>

typedef struct ZSTD_CCtx_s ZSTD_CCtx;
extern ZSTD_CCtx *ZSTD_createCCtx(void);
extern size_t ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t dstCapacity, const void *src,
                                size_t srcSize, int compressionLevel);
extern unsigned ZSTD_isError(size_t code);

static ZSTD_CCtx *cctx;

/* compress(src: Uint8Array, dst: Uint8Array, level: number) -> bytes written, or -1 if the
 * result does not fit in dst (QEMU then writes the cluster uncompressed). */
static napi_value compress(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  void *src, *dst;
  size_t srcLen, dstLen;
  int32_t level = 3;
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return NULL;
  if (napi_get_typedarray_info(env, argv[0], &t, &srcLen, &src, &ab, &off) != napi_ok) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &t, &dstLen, &dst, &ab, &off) != napi_ok) return NULL;
  if (argc > 2) napi_get_value_int32(env, argv[2], &level);
  if (!cctx) cctx = ZSTD_createCCtx();
  double n = -1;
  if (cctx) {
    size_t r = ZSTD_compressCCtx(cctx, dst, dstLen, src, srcLen, level);
    if (!ZSTD_isError(r)) n = (double)r;
  }
  napi_create_double(env, n, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor p = {"compress", NULL, compress, NULL, NULL, NULL, napi_default, NULL};
  napi_define_properties(env, exports, 1, &p);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
