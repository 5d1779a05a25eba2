// QMP client against a scripted server speaking the wire protocol of qmp-spec.txt: greeting,
// capabilities negotiation, ids, interleaved and buffered events, errors, timeouts, hangups.
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { QmpClient, QmpCommandError, QmpTimeoutError } from '../../src/qemu/index.js';
import { tempDir } from '../support/tmp.js';

type Handler = (msg: Record<string, unknown>, send: (o: unknown) => void, socket: Socket) => void;

const GREETING = {
  QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: '' }, capabilities: ['oob'] },
};
const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function fakeQmp(handler: Handler, { greet = true } = {}): Promise<string> {
  const path = join(await tempDir(), 'qmp.sock');
  const server = createServer((socket) => {
    const send = (o: unknown): void => void socket.write(`${JSON.stringify(o)}\r\n`);
    if (greet) send(GREETING);
    let buf = '';
    let negotiated = false;
    socket.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        if (msg['execute'] === 'qmp_capabilities') {
          negotiated = true;
          send({ return: {}, id: msg['id'] });
        } else if (!negotiated) {
          send({
            error: {
              class: 'CommandNotFound',
              desc: "Expecting capabilities negotiation with 'qmp_capabilities'",
            },
            id: msg['id'],
          });
        } else handler(msg, send, socket);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return path;
}

const event = (name: string, data: Record<string, unknown> = {}) => ({
  event: name,
  data,
  timestamp: { seconds: 1, microseconds: 2 },
});

describe('QmpClient', () => {
  it('negotiates, sends an id with every command, and matches replies by id around events', async () => {
    const seen: Record<string, unknown>[] = [];
    const path = await fakeQmp((msg, send) => {
      seen.push(msg);
      send(event('RESUME'));
      send({ return: { status: 'running', running: true }, id: 'someone-else' }); // unknown id: dropped
      send({ return: { running: true, status: 'running', cmd: msg['execute'] }, id: msg['id'] });
    });
    const qmp = await QmpClient.connect({ path });
    expect(qmp.greeting?.QMP.version.qemu).toEqual({ major: 7, minor: 2, micro: 22 });
    const [a, b] = await Promise.all([
      qmp.execute('query-status'),
      qmp.execute('query-name', { x: 1 }),
    ]);
    expect(a).toMatchObject({ cmd: 'query-status' });
    expect(b).toMatchObject({ cmd: 'query-name' });
    expect(seen.map((m) => m['id'])).toEqual(['vmforge-2', 'vmforge-3']);
    expect(seen[1]).toEqual({ execute: 'query-name', id: 'vmforge-3', arguments: { x: 1 } });
    expect(qmp.bufferedEvents().map((e) => e.event)).toEqual(['RESUME', 'RESUME']);
    await qmp.close();
  });

  it('delivers buffered events and waits for future ones', async () => {
    const path = await fakeQmp((msg, send) => {
      if (msg['execute'] === 'system_powerdown') {
        send({ return: {}, id: msg['id'] });
        send(event('POWERDOWN'));
        setTimeout(() => send(event('SHUTDOWN', { guest: true, reason: 'guest-shutdown' })), 50);
      }
    });
    const qmp = await QmpClient.connect({ path });
    await qmp.execute('system_powerdown');
    const shutdown = qmp.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 10));
    expect((await qmp.waitForEvent('POWERDOWN')).event).toBe('POWERDOWN'); // already buffered
    expect((await shutdown).data).toEqual({ guest: true, reason: 'guest-shutdown' });
    expect(qmp.bufferedEvents()).toEqual([]);
    await expect(qmp.waitForEvent('NEVER', { timeoutMs: 50 })).rejects.toBeInstanceOf(
      QmpTimeoutError,
    );
    await qmp.close();
  });

  it('turns error replies into QmpCommandError with class and description', async () => {
    const path = await fakeQmp((msg, send) =>
      send({
        error: {
          class: 'CommandNotFound',
          desc: `The command ${String(msg['execute'])} has not been found`,
        },
        id: msg['id'],
      }),
    );
    const qmp = await QmpClient.connect({ path });
    const err = await qmp.execute('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toMatchObject({
      errorClass: 'CommandNotFound',
      message: 'QMP nope: CommandNotFound: The command nope has not been found',
    });
    await qmp.close();
  });

  it('times out a command that gets no answer, and keeps working afterwards', async () => {
    const path = await fakeQmp((msg, send) => {
      if (msg['execute'] !== 'slow') send({ return: 'ok', id: msg['id'] });
    });
    const qmp = await QmpClient.connect({ path });
    await expect(qmp.execute('slow', undefined, { timeoutMs: 100 })).rejects.toThrow(
      'QMP slow: no answer within 0.1 s',
    );
    expect(await qmp.execute('fast')).toBe('ok');
    await qmp.close();
  });

  it('fails pending commands and waiters when QEMU hangs up', async () => {
    const path = await fakeQmp((_msg, _send, socket) => socket.destroy());
    const qmp = await QmpClient.connect({ path });
    const waiting = qmp.waitForEvent('SHUTDOWN');
    await expect(qmp.execute('quit')).rejects.toThrow(/QMP connection closed by QEMU/);
    await expect(waiting).rejects.toThrow(/closed/);
    await expect(qmp.execute('query-status')).rejects.toThrow(/closed/);
  });

  it('passes HMP through human-monitor-command', async () => {
    const path = await fakeQmp((msg, send) =>
      send({ return: `ran ${JSON.stringify(msg['arguments'])}`, id: msg['id'] }),
    );
    const qmp = await QmpClient.connect({ path });
    expect(await qmp.hmp('info cpus', { cpuIndex: 1 })).toBe(
      'ran {"command-line":"info cpus","cpu-index":1}',
    );
    await qmp.close();
  });

  it('retries until the socket exists, then gives up with a clear error', async () => {
    const dir = await tempDir();
    await expect(
      QmpClient.connect({ path: join(dir, 'none.sock') }, { connectTimeoutMs: 200 }),
    ).rejects.toThrow(/Could not connect to QMP at .*none.sock: .*ENOENT/);
  });

  it('fails the handshake when the greeting never comes', async () => {
    const path = await fakeQmp(() => undefined, { greet: false });
    await expect(QmpClient.connect({ path }, { connectTimeoutMs: 300 })).rejects.toThrow(
      /greeting: no answer/,
    );
  });

  it('treats invalid JSON as a protocol error', async () => {
    const path = await fakeQmp((_msg, _send, socket) => socket.write('this is not json\r\n'));
    const qmp = await QmpClient.connect({ path });
    await expect(qmp.execute('query-status')).rejects.toThrow(
      /QMP sent invalid JSON: this is not json/,
    );
  });
});
