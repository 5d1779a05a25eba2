// Shared helpers for the NBD interop tests: start vmforge-nbd, qemu-nbd and nbdkit as real
// processes, wait until they listen, run libnbd's Python bindings, and make TLS credentials.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { access, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { binPath, run } from '../support/run.js';

/** A python3 that can `import nbd` (pyenv shims on PATH may lack python3-libnbd). */
export const PYTHON = (() => {
  for (const p of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(p, ['-c', 'import nbd'], { stdio: 'ignore' }).status === 0) return p;
  }
  return '/usr/bin/python3';
})();

/** True when libnbd's Python module is importable (python3-libnbd installed). */
export function hasPythonNbd(): boolean {
  return spawnSync(PYTHON, ['-c', 'import nbd'], { stdio: 'ignore' }).status === 0;
}

export interface Server {
  proc: ChildProcess;
  /** Everything the server printed on stderr so far. */
  stderr(): string;
  /** Send a signal and wait for the exit code (or signal). */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  exited: Promise<number | string>;
}

function track(proc: ChildProcess): Server {
  let err = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (d: string) => (err += d));
  proc.stdout?.resume();
  const exited = new Promise<number | string>((resolve) =>
    proc.once('exit', (code, sig) => resolve(code ?? sig ?? -1)),
  );
  return {
    proc,
    stderr: () => err,
    exited,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

export async function waitForSocket(path: string, server?: Server, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await access(path);
      await new Promise<void>((resolve, reject) => {
        const s = net.connect(path);
        s.once('connect', () => {
          s.destroy();
          resolve();
        });
        s.once('error', reject);
      });
      return;
    } catch {
      if (server && server.proc.exitCode !== null) {
        throw new Error(`server exited (${server.proc.exitCode}): ${server.stderr()}`);
      }
      if (Date.now() > deadline) throw new Error(`socket ${path} never appeared`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

export async function waitForPort(port: number, server?: Server, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (server && server.proc.exitCode !== null) {
      throw new Error(`server exited (${server.proc.exitCode}): ${server.stderr()}`);
    }
    if (Date.now() > deadline) throw new Error(`port ${port} never opened`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** Start the built vmforge-nbd (dist/) under the Node running the tests. */
export function spawnVmforgeNbd(args: string[], env: NodeJS.ProcessEnv = {}): Server {
  return track(
    spawn(process.execPath, [binPath('vmforge-nbd'), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C', ...env },
    }),
  );
}

export function spawnTool(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Server {
  return track(
    spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C', ...env },
    }),
  );
}

/** Start a server on a unix socket and wait for it to accept connections. */
export async function startOnSocket(
  kind: 'vmforge' | 'qemu' | 'nbdkit',
  socket: string,
  args: string[],
): Promise<Server> {
  const s =
    kind === 'vmforge'
      ? spawnVmforgeNbd(['-k', socket, ...args])
      : kind === 'qemu'
        ? spawnTool('qemu-nbd', ['-k', socket, ...args])
        : spawnTool('nbdkit', ['-f', '-U', socket, ...args]);
  await waitForSocket(socket, s);
  return s;
}

export function unixUri(socket: string, exportName = ''): string {
  return `nbd+unix:///${exportName}?socket=${socket}`;
}

/** Run a Python script with libnbd available; the script's stdout is parsed as JSON. */
export async function python<T = unknown>(script: string, args: string[] = []): Promise<T> {
  const r = await run(PYTHON, ['-c', script, ...args], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`python failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** Make a CA, a server certificate for localhost/127.0.0.1 and a client certificate (openssl). */
export async function makePki(dir: string): Promise<void> {
  const sh = `set -e
cd '${dir}'
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 30 -subj "/CN=vmforge test CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj "/CN=localhost"
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=serverAuth\\n" > server.ext
openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 30 -extfile server.ext
openssl req -newkey rsa:2048 -nodes -keyout client-key.pem -out client.csr -subj "/CN=alice"
printf "basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=clientAuth\\n" > client.ext
openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out client-cert.pem -days 30 -extfile client.ext
`;
  const r = await run('sh', ['-c', sh]);
  if (r.code !== 0) throw new Error(`openssl failed: ${r.stderr}`);
}

/** A psktool-format keys file (DIR/keys.psk) with one random key for `user`. */
export async function makePsk(dir: string, user: string): Promise<string> {
  const key = Buffer.from(Array.from({ length: 32 }, () => Math.floor(Math.random() * 256)));
  const path = join(dir, 'keys.psk');
  await writeFile(path, `${user}:${key.toString('hex')}\n`);
  return path;
}

/** A raw image with a recognisable pattern in some ranges and holes elsewhere. */
export async function makeSparseImage(path: string, size: number): Promise<void> {
  const { open } = await import('node:fs/promises');
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    const chunk = Buffer.alloc(192 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
    for (let off = 0; off + chunk.length <= size; off += 1024 * 1024) {
      await fh.write(chunk, 0, chunk.length, off);
    }
  } finally {
    await fh.close();
  }
}
