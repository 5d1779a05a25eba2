// Random bytes at both ends of the protocol (seeded, so failures reproduce). The server must
// never throw, never log an internal error, and keep serving well-behaved clients; the client
// must turn garbage into errors, never a hang or a crash.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { join } from 'node:path';
import { NbdClient } from '../../src/nbd/client.js';
import {
  NBD_CMD_READ,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPTS_MAGIC,
  NBD_OPT_GO,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REQUEST_MAGIC,
} from '../../src/nbd/protocol.js';
import {
  encodeGreeting,
  encodeInfoExport,
  encodeInfoRequest,
  encodeOptionReply,
  encodeRequest,
} from '../../src/nbd/wire.js';
import { tempDir } from '../support/tmp.js';
import { memoryDevice, testServer, type Peer, type TestServer } from './helpers.js';

/** mulberry32: small seeded PRNG. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    bytes: (n: number) => Uint8Array.from({ length: n }, () => Math.floor(next() * 256)),
  };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function server(): Promise<TestServer> {
  const t = testServer({
    exports: [{ device: await memoryDevice(1 << 20, (i) => i & 0xff) }],
    maxConnections: 0,
    handshakeTimeoutMs: 2000,
  });
  cleanups.push(() => t.server.destroy());
  return t;
}

async function healthy(t: TestServer): Promise<void> {
  const p = t.connect();
  await goPeer(p);
  p.socket.write(encodeRequest(0, NBD_CMD_READ, 42n, 1000, 16));
  const head = await p.recv(16);
  expect(new DataView(head.buffer, head.byteOffset).getUint32(4)).toBe(0);
  const data = await p.recv(16);
  expect([...data]).toEqual(Array.from({ length: 16 }, (_, i) => (1000 + i) & 0xff));
  p.socket.destroy();
}

async function goPeer(p: Peer, structured = false): Promise<void> {
  await p.greet();
  if (structured) {
    await p.option(NBD_OPT_STRUCTURED_REPLY);
    await p.reply();
  }
  await p.option(NBD_OPT_GO, encodeInfoRequest('', [NBD_INFO_BLOCK_SIZE]));
  for (let r = await p.reply(); r.type !== NBD_REP_ACK; r = await p.reply());
}

function noInternalErrors(t: TestServer): void {
  const bad = t.logs.filter((l) => l.level === 'error');
  expect(bad).toEqual([]);
}

describe('fuzz: server', () => {
  it('survives random bytes in the handshake from 100 clients', async () => {
    const t = await server();
    const r = rng(1);
    for (let i = 0; i < 100; i++) {
      const p = t.connect();
      await p.recv(18);
      const mode = r.int(3);
      const chunks: Uint8Array[] = [];
      if (mode > 0) chunks.push(Uint8Array.of(0, 0, 0, r.int(4))); // plausible client flags
      if (mode === 2) {
        // A valid option header with random option number and length, then random data.
        const h = new Uint8Array(16);
        const v = new DataView(h.buffer);
        v.setBigUint64(0, NBD_OPTS_MAGIC);
        v.setUint32(8, r.int(16));
        v.setUint32(12, r.int(64));
        chunks.push(h);
      }
      chunks.push(r.bytes(r.int(400)));
      for (const c of chunks) p.socket.write(c);
      // Whatever the server did, let it settle and hang up.
      await new Promise((res) => setTimeout(res, 2));
      p.socket.destroy();
    }
    await healthy(t);
    noInternalErrors(t);
  });

  it('survives random requests in transmission (valid magic, random fields)', async () => {
    const t = await server();
    const r = rng(2);
    for (let i = 0; i < 20; i++) {
      const p = t.connect();
      await goPeer(p, r.int(2) === 1);
      for (let j = 0; j < 30; j++) {
        const req = new Uint8Array(28);
        const v = new DataView(req.buffer);
        v.setUint32(0, NBD_REQUEST_MAGIC);
        v.setUint16(4, r.int(64));
        v.setUint16(6, r.int(10) === 2 ? 3 : r.int(10)); // avoid most DISCs
        v.setBigUint64(8, BigInt(j));
        v.setUint32(16, r.int(2) ? 0 : r.int(0xffffffff));
        v.setUint32(20, r.int(1 << 21));
        v.setUint32(24, r.int(3) === 0 ? r.int(0xffffffff) : r.int(70000));
        p.socket.write(req);
        if (v.getUint16(6) === 1) p.socket.write(r.bytes(Math.min(v.getUint32(24), 70000)));
      }
      await new Promise((res) => setTimeout(res, 5));
      p.socket.destroy();
    }
    await healthy(t);
    noInternalErrors(t);
  });

  it('survives pure garbage after a successful GO', async () => {
    const t = await server();
    const r = rng(3);
    for (let i = 0; i < 30; i++) {
      const p = t.connect();
      await goPeer(p);
      p.socket.write(r.bytes(1 + r.int(3000)));
      await new Promise((res) => setTimeout(res, 2));
      p.socket.destroy();
    }
    await healthy(t);
    noInternalErrors(t);
  });
});

describe('fuzz: client', () => {
  /** A fake server that runs `script` on each connection. */
  async function fakeServer(script: (s: net.Socket) => void): Promise<string> {
    const dir = await tempDir();
    const path = join(dir, 'fake.sock');
    const srv = net.createServer(script);
    await new Promise<void>((res) => srv.listen(path, res));
    cleanups.push(
      () =>
        new Promise<void>((res) => {
          srv.close(() => res());
        }),
    );
    return path;
  }

  it('rejects random handshakes with an error, never hangs', async () => {
    const r = rng(4);
    const path = await fakeServer((s) => {
      s.on('error', () => undefined);
      const real = r.int(2) === 1;
      if (real) s.write(encodeGreeting(3));
      s.write(r.bytes(r.int(200)));
      setTimeout(() => s.destroy(), 20);
    });
    for (let i = 0; i < 30; i++) {
      await expect(NbdClient.connect({ socket: path, connectTimeoutMs: 2000 })).rejects.toThrow();
    }
  });

  it('fails pending requests when the server sends garbage replies', async () => {
    const r = rng(5);
    const path = await fakeServer((s) => {
      s.on('error', () => undefined);
      s.write(encodeGreeting(3));
      // Answer the client's options properly (ACK, GO with an export), then send garbage
      // where replies belong.
      let buf = Buffer.alloc(0);
      let flagsSeen = false;
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (!flagsSeen && buf.length >= 4) {
          buf = buf.subarray(4);
          flagsSeen = true;
        }
        while (flagsSeen && buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
          const option = buf.readUInt32BE(8);
          buf = buf.subarray(16 + buf.readUInt32BE(12));
          if (option === NBD_OPT_GO) {
            s.write(encodeOptionReply(option, 3, encodeInfoExport(1 << 20, 1)));
            s.write(encodeOptionReply(option, NBD_REP_ACK));
            s.write(r.bytes(64 + r.int(200)));
            return;
          }
          s.write(encodeOptionReply(option, NBD_REP_ACK));
        }
      });
    });
    for (let i = 0; i < 5; i++) {
      const c = await NbdClient.connect({ socket: path, connectTimeoutMs: 2000 });
      await expect(c.readInto(new Uint8Array(512), 0)).rejects.toThrow();
      c.destroy();
    }
  });
});
