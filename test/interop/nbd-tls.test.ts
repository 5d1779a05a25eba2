// TLS with QEMU's credential layout: x509 (ca-cert.pem, server-cert.pem, server-key.pem made
// with openssl here) and PSK (keys.psk), against libnbd (nbds+unix://), qemu-img's NBD client
// and qemu-nbd; plaintext refused once TLS is configured; client certificates enforced.
import { cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { NbdBlockDevice } from '../../src/nbd/client-device.js';
import { describeWithTools } from '../support/tools.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import {
  makePki,
  python,
  makePsk,
  makeSparseImage,
  startOnSocket,
  type Server,
} from './nbd-support.js';

const servers: Server[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop();
});

let pki: string;
let noClientCert: string;
let pskDir: string;
let wrongPskDir: string;

async function disk(): Promise<string> {
  const dir = await tempDir('vmforge-nbd-tls-');
  const file = join(dir, 'disk.raw');
  await makeSparseImage(file, 2 << 20);
  return file;
}

async function serveTls(
  kind: 'vmforge' | 'qemu',
  object: string,
  file: string,
  extra: string[] = [],
) {
  const dir = await tempDir('vmforge-nbd-tls-');
  const socket = join(dir, 's.sock');
  servers.push(
    await startOnSocket(kind, socket, [
      '-f',
      'raw',
      '-t',
      '-e',
      '0',
      '--object',
      object,
      '--tls-creds',
      'tls0',
      ...extra,
      file,
    ]),
  );
  return socket;
}

const x509Server = () => `tls-creds-x509,id=tls0,dir=${pki},endpoint=server`;
const pskServer = () => `tls-creds-psk,id=tls0,dir=${pskDir},endpoint=server`;

describeWithTools(['nbdinfo', 'nbdsh', 'openssl', 'qemu-img', 'qemu-nbd'], 'NBD over TLS', () => {
  beforeAll(async () => {
    // Long-lived (not per-test) directories: credentials are reused by every test below.
    pki = await (await import('node:fs/promises')).mkdtemp('/tmp/vmforge-pki-');
    await makePki(pki);
    noClientCert = `${pki}-nocert`;
    await cp(pki, noClientCert, { recursive: true });
    await rm(join(noClientCert, 'client-cert.pem'));
    await rm(join(noClientCert, 'client-key.pem'));
    pskDir = `${pki}-psk`;
    await cp(pki, pskDir, { recursive: true });
    await makePsk(pskDir, 'alice');
    wrongPskDir = `${pki}-psk-wrong`;
    await cp(pki, wrongPskDir, { recursive: true });
    await makePsk(wrongPskDir, 'alice');
    return async () => {
      for (const d of [pki, noClientCert, pskDir, wrongPskDir])
        await rm(d, { recursive: true, force: true });
    };
  });

  it('x509: libnbd negotiates TLS and reads correct data; plaintext is refused', async () => {
    const file = await disk();
    const socket = await serveTls('vmforge', x509Server(), file);
    const tls = `nbds+unix:///?socket=${socket}&tls-certificates=${pki}`;
    const info = JSON.parse((await run('nbdinfo', ['--json', tls])).stdout) as { TLS: boolean };
    expect(info.TLS).toBe(true);
    const sum = await python<{ sha: string; tls: boolean }>(
      [
        'import hashlib, json, sys, nbd',
        'h = nbd.NBD()',
        'h.set_uri_allow_local_file(True)',
        'h.set_tls(nbd.TLS_REQUIRE)',
        'h.connect_uri(sys.argv[1])',
        "print(json.dumps({'sha': hashlib.sha256(h.pread(2097152, 0)).hexdigest(), 'tls': h.get_tls_negotiated()}))",
      ].join('\n'),
      [tls],
    );
    const local = await run('sha256sum', [file]);
    expect(sum).toEqual({ sha: local.stdout.split(' ')[0], tls: true });
    const plain = await run('nbdinfo', [`nbd+unix:///?socket=${socket}`]);
    expect(plain.code).not.toBe(0);
    // qemu-img's NBD client with QEMU's own client credentials.
    const q = await run('qemu-img', [
      'info',
      '--object',
      `tls-creds-x509,id=tls0,dir=${pki},endpoint=client`,
      '--image-opts',
      `driver=nbd,path=${socket},tls-creds=tls0,tls-hostname=localhost`,
    ]);
    expect(q.code, q.stderr).toBe(0);
    expect(q.stdout).toContain('virtual size: 2 MiB');
  });

  it('x509: a client without a certificate is refused unless verify-peer=off', async () => {
    const file = await disk();
    const strict = await serveTls('vmforge', x509Server(), file);
    const r = await run('nbdinfo', [
      `nbds+unix:///?socket=${strict}&tls-certificates=${noClientCert}`,
    ]);
    expect(r.code).not.toBe(0);
    const lax = await serveTls('vmforge', `${x509Server()},verify-peer=off`, file);
    const ok = await run('nbdinfo', [
      '--size',
      `nbds+unix:///?socket=${lax}&tls-certificates=${noClientCert}`,
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe(String(2 << 20));
  });

  it('PSK: the right key works, a wrong key does not', async () => {
    const file = await disk();
    const socket = await serveTls('vmforge', pskServer(), file);
    const good = await run('nbdinfo', [
      '--json',
      `nbds+unix://alice@/?socket=${socket}&tls-psk-file=${pskDir}/keys.psk`,
    ]);
    expect(good.code, good.stderr).toBe(0);
    expect((JSON.parse(good.stdout) as { TLS: boolean }).TLS).toBe(true);
    const bad = await run('nbdinfo', [
      `nbds+unix://alice@/?socket=${socket}&tls-psk-file=${wrongPskDir}/keys.psk`,
    ]);
    expect(bad.code).not.toBe(0);
    const q = await run('qemu-io', [
      '--object',
      `tls-creds-psk,id=tls0,dir=${pskDir},endpoint=client,username=alice`,
      '--image-opts',
      `driver=nbd,path=${socket},tls-creds=tls0`,
      '-c',
      'write -P 0x42 0 64k',
      '-c',
      'read -P 0x42 0 64k',
    ]);
    expect(q.code, q.stderr).toBe(0);
    expect(q.stdout).not.toContain('Pattern verification failed');
  });

  it("vmforge's client over TLS to qemu-nbd (x509 and PSK), and -L like qemu-nbd -L", async () => {
    const file = await disk();
    const xs = await serveTls('qemu', x509Server(), file);
    const dev = await NbdBlockDevice.open(`nbds+unix:///?socket=${xs}&tls-certificates=${pki}`);
    expect(dev.client.info.tls).toBe(true);
    const buf = new Uint8Array(4096);
    await dev.read(buf, 0);
    expect(buf[1]).toBe((31 + 7) & 0xff);
    await dev.close();
    const listArgs = [
      '-L',
      '-k',
      xs,
      '--object',
      `tls-creds-x509,id=tls0,dir=${pki},endpoint=client`,
      '--tls-creds',
      'tls0',
      '--tls-hostname',
      'localhost',
    ];
    const ours = await run(process.execPath, [
      join(process.cwd(), 'bin/vmforge-nbd.js'),
      ...listArgs,
    ]);
    const theirs = await run('qemu-nbd', listArgs);
    expect(ours.code, ours.stderr).toBe(0);
    expect(ours.stdout).toBe(theirs.stdout);

    const ps = await serveTls('qemu', pskServer(), file);
    const pdev = await NbdBlockDevice.open(
      `nbds+unix://alice@/?socket=${ps}&tls-psk-file=${pskDir}/keys.psk`,
    );
    expect(pdev.client.info.tls).toBe(true);
    await pdev.read(buf, 0);
    expect(buf[1]).toBe((31 + 7) & 0xff);
    await pdev.close();
  });
});
