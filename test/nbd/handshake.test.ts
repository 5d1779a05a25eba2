// Server handshake: every option, every rejection, the limits, with input whole and split into
// single bytes.
import { afterEach, describe, expect, it } from 'vitest';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_NAME,
  NBD_INIT_PASSWD,
  NBD_OPTS_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
} from '../../src/nbd/protocol.js';
import {
  decodeGreeting,
  decodeInfoReply,
  decodeRepMetaContext,
  decodeRepServer,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeString,
} from '../../src/nbd/wire.js';
import type { NbdServer } from '../../src/nbd/server.js';
import { memoryDevice, testServer, type Chunking, type TestServer } from './helpers.js';

const servers: NbdServer[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.destroy();
});

async function setup(extra: Partial<Parameters<typeof testServer>[0]> = {}): Promise<TestServer> {
  const t = testServer({
    exports: [
      { device: await memoryDevice(1 << 20), name: '', description: 'the default' },
      { device: await memoryDevice(4096), name: 'ro', readOnly: true, allocationDepth: true },
    ],
    ...extra,
  });
  servers.push(t.server);
  return t;
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

for (const chunking of ['whole', 'bytes'] as Chunking[]) {
  describe(`server handshake (${chunking} input)`, () => {
    it('greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      const g = decodeGreeting(await p.recv(18));
      expect(g.passwd).toBe(NBD_INIT_PASSWD);
      expect(g.magic).toBe(NBD_OPTS_MAGIC);
      expect(g.flags).toBe(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    });

    it('drops a client that sets unknown client flags', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet(NBD_FLAG_C_FIXED_NEWSTYLE | 0x80);
      expect(await p.closed()).toBe(true);
      expect(t.logs.map((l) => l.message).join('\n')).toContain(
        'Unknown client flags 0x80 received',
      );
    });

    it('drops a client that sends a bad option magic', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.send(new Uint8Array(16).fill(0x41));
      expect(await p.closed()).toBe(true);
      expect(t.logs.some((l) => l.message.includes('Bad magic received'))).toBe(true);
    });

    it('answers unknown options with ERR_UNSUP, skipping their data, and keeps going', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.option(0x1234, new Uint8Array(100).fill(7));
      const r = await p.reply();
      expect(r.option).toBe(0x1234);
      expect(r.type).toBe(NBD_REP_ERR_UNSUP);
      expect(text(r.payload)).toContain('Unsupported option 4660');
      // The stream is still in sync: a LIST works.
      await p.option(NBD_OPT_LIST);
      const s = await p.reply();
      expect(s.type).toBe(NBD_REP_SERVER);
      expect(decodeRepServer(s.payload)).toEqual({ name: '', description: 'the default' });
      expect((await p.reply()).type).toBe(NBD_REP_SERVER);
      expect((await p.reply()).type).toBe(NBD_REP_ACK);
    });

    it('GO on the default export: info replies, ACK, then transmission', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.option(NBD_OPT_STRUCTURED_REPLY);
      expect((await p.reply()).type).toBe(NBD_REP_ACK);
      await p.option(NBD_OPT_GO, encodeInfoRequest('', [NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME]));
      const infos = [];
      for (;;) {
        const r = await p.reply();
        if (r.type === NBD_REP_ACK) break;
        expect(r.type).toBe(NBD_REP_INFO);
        infos.push(decodeInfoReply(r.payload));
      }
      expect(infos).toContainEqual({ type: 'name', name: '' });
      expect(infos).toContainEqual({ type: 'description', description: 'the default' });
      expect(infos).toContainEqual({
        type: 'block-size',
        sizes: { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 },
      });
      const exp = infos.find((i) => i.type === 'export');
      expect(exp).toMatchObject({ size: 1 << 20 });
      expect(exp?.type === 'export' && exp.flags & NBD_FLAG_SEND_DF).toBeTruthy();
    });

    it('INFO/GO for an unknown export: ERR_UNKNOWN, connection kept', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.option(NBD_OPT_INFO, encodeInfoRequest('nope', []));
      const r = await p.reply();
      expect(r.type).toBe(NBD_REP_ERR_UNKNOWN);
      expect(text(r.payload)).toBe("export 'nope' not present");
      await p.option(NBD_OPT_GO, encodeInfoRequest('ro', []));
      let last;
      do last = await p.reply();
      while (last.type === NBD_REP_INFO);
      expect(last.type).toBe(NBD_REP_ACK);
    });

    it('rejects inconsistent INFO lengths and over-long names with ERR_INVALID', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      const bad = encodeInfoRequest('', []);
      new DataView(bad.buffer).setUint32(0, 50); // name longer than the option
      await p.option(NBD_OPT_INFO, bad);
      const r = await p.reply();
      expect(r.type).toBe(NBD_REP_ERR_INVALID);
      expect(text(r.payload)).toBe('Inconsistent lengths in option info');
      const long = new Uint8Array(4 + 5000 + 2);
      new DataView(long.buffer).setUint32(0, 5000);
      await p.option(NBD_OPT_INFO, long);
      const r2 = await p.reply();
      expect(r2.type).toBe(NBD_REP_ERR_INVALID);
      expect(text(r2.payload)).toBe('Invalid name length: 5000');
      await p.option(NBD_OPT_STRUCTURED_REPLY, new Uint8Array(3));
      const r3 = await p.reply();
      expect(r3.type).toBe(NBD_REP_ERR_INVALID);
      expect(text(r3.payload)).toBe("option 'structured reply' has unexpected length");
    });

    it('lists and sets metadata contexts as qemu does', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      // SET before STRUCTURED_REPLY is invalid.
      await p.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation']));
      expect((await p.reply()).type).toBe(NBD_REP_ERR_INVALID);
      await p.option(NBD_OPT_STRUCTURED_REPLY);
      await p.reply();
      // LIST with no queries on an export with allocation depth: both contexts, id 0.
      await p.option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest('ro', []));
      const listed = [];
      for (let r = await p.reply(); r.type !== NBD_REP_ACK; r = await p.reply()) {
        expect(r.type).toBe(NBD_REP_META_CONTEXT);
        listed.push(decodeRepMetaContext(r.payload));
      }
      expect(listed).toEqual([
        { id: 0, name: 'base:allocation' },
        { id: 0, name: 'qemu:allocation-depth' },
      ]);
      // SET: unknown namespaces ignored, ids base=0, depth=1.
      await p.option(
        NBD_OPT_SET_META_CONTEXT,
        encodeMetaContextRequest('ro', ['x-foo:bar', 'qemu:allocation-depth', 'base:allocation']),
      );
      const set = [];
      for (let r = await p.reply(); r.type !== NBD_REP_ACK; r = await p.reply()) {
        set.push(decodeRepMetaContext(r.payload));
      }
      expect(set).toEqual([
        { id: 0, name: 'base:allocation' },
        { id: 1, name: 'qemu:allocation-depth' },
      ]);
      // The default export has no allocation depth.
      await p.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('', ['qemu:']));
      expect((await p.reply()).type).toBe(NBD_REP_ACK);
    });

    it('EXPORT_NAME to an unknown export ends the connection', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.option(NBD_OPT_EXPORT_NAME, encodeString('missing'));
      expect(await p.closed()).toBe(true);
    });

    it('EXPORT_NAME replies size and flags (no zero padding with NO_ZEROES)', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.option(NBD_OPT_EXPORT_NAME, encodeString('ro'));
      const r = await p.recv(10);
      const v = new DataView(r.buffer, r.byteOffset, 10);
      expect(Number(v.getBigUint64(0))).toBe(4096);
      expect(v.getUint16(8) & NBD_FLAG_READ_ONLY).toBeTruthy();
      expect(v.getUint16(8) & NBD_FLAG_SEND_DF).toBe(0);
    });

    it('ABORT is acknowledged', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.option(NBD_OPT_ABORT);
      expect((await p.reply()).type).toBe(NBD_REP_ACK);
      expect(await p.closed()).toBe(true);
    });

    it('STARTTLS without TLS configured: ERR_POLICY', async () => {
      const t = await setup();
      const p = t.connect(chunking);
      await p.greet();
      await p.option(NBD_OPT_STARTTLS);
      const r = await p.reply();
      expect(r.type).toBe(NBD_REP_ERR_POLICY);
      expect(text(r.payload)).toBe('TLS not configured');
    });
  });
}

describe('server handshake limits and TLS policy', () => {
  it('with TLS required, everything but STARTTLS gets ERR_TLS_REQD and EXPORT_NAME closes', async () => {
    const t = await setup({ tls: { upgrade: () => Promise.reject(new Error('no')) } });
    const p = t.connect();
    await p.greet();
    for (const opt of [NBD_OPT_LIST, NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY, 0x77]) {
      await p.option(opt, opt === NBD_OPT_GO ? encodeInfoRequest('', []) : undefined);
      const r = await p.reply();
      expect(r.type).toBe(NBD_REP_ERR_TLS_REQD);
    }
    await p.option(NBD_OPT_EXPORT_NAME);
    expect(await p.closed()).toBe(true);
  });

  it('a failed TLS handshake drops the client', async () => {
    const t = await setup({ tls: { upgrade: () => Promise.reject(new Error('bad cert')) } });
    const p = t.connect();
    await p.greet();
    await p.option(NBD_OPT_STARTTLS);
    expect((await p.reply()).type).toBe(NBD_REP_ACK);
    expect(await p.closed()).toBe(true);
    expect(t.logs.some((l) => l.message.includes('bad cert'))).toBe(true);
  });

  it('answers a too-long known option with ERR_TOO_BIG without buffering it', async () => {
    const t = await setup({ limits: { maxOptionLength: 1024 } });
    const p = t.connect();
    await p.greet();
    await p.option(NBD_OPT_GO, new Uint8Array(5000));
    const r = await p.reply();
    expect(r.type).toBe(NBD_REP_ERR_TOO_BIG);
    await p.option(NBD_OPT_LIST);
    expect((await p.reply()).type).toBe(NBD_REP_SERVER);
  });

  it('drops a client announcing an absurd option length', async () => {
    const t = await setup();
    const p = t.connect();
    await p.greet();
    const h = new Uint8Array(16);
    const v = new DataView(h.buffer);
    v.setBigUint64(0, NBD_OPTS_MAGIC);
    v.setUint32(8, NBD_OPT_GO);
    v.setUint32(12, 0xffff_ffff);
    await p.send(h);
    expect(await p.closed()).toBe(true);
    expect(t.logs.some((l) => l.message.includes('is larger than max len'))).toBe(true);
  });

  it('drops a client after too many options', async () => {
    const t = await setup({ limits: { maxOptions: 5 } });
    const p = t.connect();
    await p.greet();
    for (let i = 0; i < 5; i++) {
      await p.option(0x99);
      expect((await p.reply()).type).toBe(NBD_REP_ERR_UNSUP);
    }
    await p.option(0x99);
    expect(await p.closed()).toBe(true);
  });

  it('drops a client that does not finish the handshake in time', async () => {
    const t = await setup({ handshakeTimeoutMs: 100 });
    const p = t.connect();
    await p.recv(18);
    expect(await p.closed(3000)).toBe(true);
    expect(t.logs.some((l) => l.message.includes('handshake not completed'))).toBe(true);
  });

  it('a non-fixed-newstyle client may only use EXPORT_NAME', async () => {
    const t = await setup();
    const p = t.connect();
    await p.greet(0);
    await p.option(NBD_OPT_LIST);
    expect(await p.closed()).toBe(true);
    const q = t.connect();
    await q.greet(0);
    await q.option(NBD_OPT_EXPORT_NAME, encodeString(''));
    const r = await q.recv(134); // no NO_ZEROES: 124 zero bytes follow size and flags
    expect(r.subarray(10).every((b) => b === 0)).toBe(true);
  });
});
