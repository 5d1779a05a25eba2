# libnbd probe used by test/interop/nbd-compare.test.ts: connect to URI, record everything a
# client can observe (negotiated features, flags, block sizes, status, data, the results and
# errors of every command), print it as JSON. Run against vmforge-nbd and qemu-nbd serving
# identical files, the two outputs must be equal.
#
# usage: nbd-probe.py URI [--writes] [--depth]
import errno
import hashlib
import json
import sys

import nbd

uri = sys.argv[1]
writes = "--writes" in sys.argv
depth = "--depth" in sys.argv

h = nbd.NBD()
h.add_meta_context("base:allocation")
if depth:
    h.add_meta_context("qemu:allocation-depth")
# Let invalid requests (past EOF, bad flags, unadvertised commands) reach the server.
h.set_strict_mode(0)
h.connect_uri(uri)
size = h.get_size()
out = {"size": size}
out["protocol"] = h.get_protocol()
out["structured"] = h.get_structured_replies_negotiated()
out["tls"] = h.get_tls_negotiated()
for name in [
    "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_df",
    "can_multi_conn", "can_cache", "is_read_only", "is_rotational",
]:
    out[name] = getattr(h, name)()
out["block_size"] = [
    h.get_block_size(nbd.SIZE_MINIMUM),
    h.get_block_size(nbd.SIZE_PREFERRED),
    h.get_block_size(nbd.SIZE_MAXIMUM),
]
out["contexts"] = {
    c: h.can_meta_context(c) for c in ["base:allocation", "qemu:allocation-depth"]
}


def attempt(f):
    try:
        return ["ok", f()]
    except nbd.Error as e:
        return ["err", errno.errorcode.get(e.errno, e.errno)]


def status(offset, count, flags=0):
    res = {}

    def cb(ctx, off, entries, err):
        res.setdefault(ctx, []).append(list(entries))
        return 0

    h.block_status(count, offset, cb, flags)
    return res


def digest(data):
    return hashlib.sha256(data).hexdigest()


def read_all():
    m = hashlib.sha256()
    step = 1 << 20
    for off in range(0, size, step):
        m.update(h.pread(min(step, size - off), off))
    return m.hexdigest()


out["status_all"] = attempt(lambda: status(0, size))
out["status_req_one"] = attempt(lambda: status(0, size, nbd.CMD_FLAG_REQ_ONE))
out["status_middle"] = attempt(lambda: status(100000, 300000))
out["status_past_end"] = attempt(lambda: status(size, 512))
out["status_zero_len"] = attempt(lambda: status(0, 0))
out["read_all"] = read_all()
out["read_unaligned"] = attempt(lambda: digest(h.pread(1000, 777)))
out["read_df"] = attempt(lambda: digest(h.pread(65536, 0, nbd.CMD_FLAG_DF)))
out["read_fua"] = attempt(lambda: digest(h.pread(4096, 0, nbd.CMD_FLAG_FUA)))
out["read_zero_len"] = attempt(lambda: len(h.pread(0, 0)))
out["read_past_end"] = attempt(lambda: digest(h.pread(4096, size - 1024)))
out["read_offset_past_end"] = attempt(lambda: digest(h.pread(1, size + 4096)))
out["read_bad_flag"] = attempt(lambda: digest(h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE)))
out["read_oversized"] = attempt(lambda: len(h.pread(33554432 + 512, 0)))
out["cache"] = attempt(lambda: h.cache(65536, 0))
out["cache_past_end"] = attempt(lambda: h.cache(4096, size))
out["flush"] = attempt(lambda: h.flush())
out["write"] = attempt(lambda: h.pwrite(b"\xab" * 5000, 1234))
out["write_past_end"] = attempt(lambda: h.pwrite(b"x" * 512, size - 256))
out["zero_past_end"] = attempt(lambda: h.zero(512, size))
out["trim_past_end"] = attempt(lambda: h.trim(512, size))
if writes:
    out["write_fua"] = attempt(lambda: h.pwrite(b"\xcd" * 4096, 65536, nbd.CMD_FLAG_FUA))
    out["zero"] = attempt(lambda: h.zero(65536, 131072))
    out["zero_nohole"] = attempt(lambda: h.zero(4096, 262144, nbd.CMD_FLAG_NO_HOLE))
    out["zero_fast"] = attempt(lambda: h.zero(65536, 327680, nbd.CMD_FLAG_FAST_ZERO))
    out["trim"] = attempt(lambda: h.trim(131072, 1048576))
    out["trim_fua"] = attempt(lambda: h.trim(65536, 2097152, nbd.CMD_FLAG_FUA))
    out["flush_after"] = attempt(lambda: h.flush())
    out["status_after"] = attempt(lambda: status(0, size))
    out["read_after"] = read_all()
h.shutdown()
print(json.dumps(out, indent=1, sort_keys=True))
