// `network`: none, user-mode (SLIRP) with host port forwards, or tap; NIC model and MAC.
// hostfwd syntax is QEMU's: [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport (qemu-options.hx).

import type { NetworkModel } from '../model.js';
import type { Field } from './reader.js';

const NIC_MODELS = ['virtio-net-pci', 'e1000', 'e1000e', 'rtl8139'] as const;
const HOSTFWD = /^(tcp|udp)?:([0-9.]*|\[[0-9a-fA-F:]*\]):(\d{1,5})-([0-9.]*):(\d{1,5})$/;

export function readNetworks(f: Field): NetworkModel[] {
  if (!f.present || f.value === 'none') return [];
  const items = f.arrayOrOne();
  return items.map((item, i) => readNetwork(item, i));
}

function readNetwork(item: Field, i: number): NetworkModel {
  const id = `net${i}`;
  if (typeof item.value === 'string') {
    const kind = item.oneOf(['user', 'tap'] as const);
    return kind === 'user'
      ? { id, kind, hostfwd: [], model: 'virtio-net-pci', mac: undefined }
      : {
          id,
          kind,
          ifname: undefined,
          script: undefined,
          downscript: undefined,
          model: 'virtio-net-pci',
          mac: undefined,
        };
  }
  const o = item.object();
  const kind = o.field('type').oneOf(['user', 'tap'] as const);
  const model = o.opt('model')?.oneOf(NIC_MODELS) ?? 'virtio-net-pci';
  const macField = o.opt('mac');
  const mac = macField?.string();
  if (macField && !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(mac!)) {
    macField.expected('a MAC address such as 52:54:00:12:34:56');
  }
  if (macField && parseInt(mac!.slice(0, 2), 16) & 1)
    macField.fail('a multicast MAC (odd first octet) cannot be a NIC address');
  let net: NetworkModel;
  if (kind === 'user') {
    const fw = o.opt('hostfwd');
    const hostfwd = fw ? fw.arrayOrOne().map(readHostfwd) : [];
    net = { id, kind, hostfwd, model, mac };
  } else {
    const ifname = o.opt('ifname')?.nonEmptyString();
    if (ifname !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(ifname)) {
      o.field('ifname').expected('an interface name of up to 15 letters, digits, _ . -');
    }
    net = {
      id,
      kind,
      ifname,
      // QEMU defaults to /etc/qemu-ifup; libvirt and lima never run it. `no` unless asked.
      script: o.opt('script')?.nonEmptyString(),
      downscript: o.opt('downscript')?.nonEmptyString(),
      model,
      mac,
    };
  }
  o.done();
  return net;
}

/** A forward as QEMU's string, or `{protocol, hostAddress, hostPort, guestAddress, guestPort}`. */
function readHostfwd(f: Field): string {
  let text: string;
  if (typeof f.value === 'string') {
    text = f.value;
  } else {
    const o = f.object();
    const protocol = o.opt('protocol')?.oneOf(['tcp', 'udp'] as const) ?? 'tcp';
    const hostAddress = o.opt('hostAddress')?.string() ?? '127.0.0.1';
    const hostPort = o.field('hostPort').int({ min: 0, max: 65535 });
    const guestAddress = o.opt('guestAddress')?.string() ?? '';
    const guestPort = o.field('guestPort').int({ min: 1, max: 65535 });
    o.done();
    text = `${protocol}:${hostAddress}:${hostPort}-${guestAddress}:${guestPort}`;
  }
  const m = HOSTFWD.exec(text);
  if (!m || Number(m[3]) > 65535 || Number(m[5]) > 65535 || Number(m[5]) === 0) {
    f.expected(
      'a forward such as "tcp:127.0.0.1:2222-:22" ([tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport)',
    );
  }
  return text;
}
