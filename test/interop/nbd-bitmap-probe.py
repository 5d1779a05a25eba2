# libnbd probe for test/interop/nbd-bitmap.test.ts: what a client sees of an export's
# qemu:dirty-bitmap:NAME contexts. Run against vmforge-nbd and qemu-nbd serving identical images,
# the two outputs must be equal.
#
# usage: nbd-bitmap-probe.py URI SPEC_JSON
#   SPEC_JSON = {
#     "lists": [[query, ...], ...],        # NBD_OPT_LIST_META_CONTEXT, one per query list
#     "contexts": [name, ...],             # NBD_OPT_SET_META_CONTEXT before GO
#     "requests": [[offset, length, req_one], ...],   # BLOCK_STATUS after GO
#     "writes": [["write"|"zero"|"trim", offset, length], ...],  # then the requests again
#   }
# Prints {"lists": [...], "selected": {...}, "status": [...], "after": [...]} as JSON.
import errno
import json
import sys

import nbd

uri = sys.argv[1]
spec = json.loads(sys.argv[2])

h = nbd.NBD()
# Requests not aligned to anything and past the end must reach the server unchanged.
h.set_strict_mode(0)
h.set_opt_mode(True)
h.connect_uri(uri)

out = {"lists": []}
for queries in spec.get("lists", []):
    names = []
    h.clear_meta_contexts()
    for q in queries:
        h.add_meta_context(q)
    # libnbd 1.14 sends the queries added with add_meta_context (none: "list everything").
    h.opt_list_meta_context(lambda name: names.append(name) or 0)
    out["lists"].append(names)

h.clear_meta_contexts()
for c in spec.get("contexts", []):
    h.add_meta_context(c)
h.opt_go()
out["size"] = h.get_size()
out["selected"] = {c: h.can_meta_context(c) for c in spec.get("contexts", [])}


def status(offset, length, req_one):
    res = {}

    def cb(ctx, off, entries, err):
        res.setdefault(ctx, []).append(list(entries))
        return 0

    try:
        h.block_status(length, offset, cb, nbd.CMD_FLAG_REQ_ONE if req_one else 0)
    except nbd.Error as e:
        return {"error": errno.errorcode.get(e.errno, e.errno)}
    return res


def all_requests():
    return [[r, status(*r)] for r in spec.get("requests", [])]


out["status"] = all_requests()
if spec.get("writes"):
    for op, offset, length in spec["writes"]:
        if op == "write":
            h.pwrite(bytes([0x5A]) * length, offset)
        elif op == "zero":
            h.zero(length, offset)
        elif op == "trim":
            h.trim(length, offset)
    h.flush()
    out["after"] = all_requests()
h.shutdown()
print(json.dumps(out, sort_keys=True))
