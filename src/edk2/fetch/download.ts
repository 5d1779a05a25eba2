// HTTP(S) download with undici: timeouts (connect, headers, idle body), retries with exponential
// backoff on transient failures (network errors, timeouts, 408/429/5xx), resume with a Range
// request from what an earlier attempt (or an earlier run) left in the .part file, a size cap,
// and proxies from HTTPS_PROXY/HTTP_PROXY/NO_PROXY (undici's EnvHttpProxyAgent).

import { open, rm, stat, truncate } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  EnvHttpProxyAgent,
  errors as undiciErrors,
  interceptors,
  request,
  type Dispatcher,
} from 'undici';
import { AbortError, EnvironmentError, InvalidArgumentError } from '../../core/index.js';
import type { Env } from '../paths.js';

export interface DownloadOptions {
  /** Connect, response-headers and between-body-chunks timeout. @default 30000 */
  timeoutMs?: number;
  /** Extra attempts after the first. @default 3 */
  retries?: number;
  /** First backoff delay; doubles per attempt. @default 500 */
  retryDelayMs?: number;
  /** Refuse bodies larger than this. @default 1 GiB */
  maxBytes?: number;
  /** undici dispatcher; by default an EnvHttpProxyAgent configured from `env`. */
  dispatcher?: Dispatcher;
  /** Proxy variables are read from here. @default process.env */
  env?: Env;
  signal?: AbortSignal;
  onProgress?: (p: {
    received: number;
    total?: number;
    attempt: number;
    resumedAt?: number;
  }) => void;
}

export interface DownloadResult {
  size: number;
  attempts: number;
  /** Byte offsets at which a Range request resumed the transfer. */
  resumedAt: number[];
}

class PermanentError extends Error {}

function envValue(env: Env, name: string): string | undefined {
  return env[name] ?? env[name.toLowerCase()] ?? undefined;
}

/** The dispatcher fetch uses: proxies from the environment, our timeouts. */
export function defaultDispatcher(env: Env, timeoutMs: number): Dispatcher {
  const httpProxy = envValue(env, 'HTTP_PROXY');
  const httpsProxy = envValue(env, 'HTTPS_PROXY');
  const noProxy = envValue(env, 'NO_PROXY');
  return new EnvHttpProxyAgent({
    // Empty strings mean "no proxy" rather than "fall back to process.env".
    httpProxy: httpProxy ?? '',
    httpsProxy: httpsProxy ?? httpProxy ?? '',
    noProxy: noProxy ?? '',
    connect: { timeout: timeoutMs },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });
}

function describe(err: unknown, timeoutMs: number): string {
  if (err instanceof undiciErrors.HeadersTimeoutError)
    return `no response from the server within ${timeoutMs / 1000} s`;
  if (err instanceof undiciErrors.BodyTimeoutError)
    return `the transfer stalled for ${timeoutMs / 1000} s`;
  if (err instanceof undiciErrors.ConnectTimeoutError)
    return `could not connect within ${timeoutMs / 1000} s`;
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.cause?.code ?? e.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return 'the connection was cut';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'the host name does not resolve';
  return e.cause?.message ?? e.message ?? String(err);
}

/** Parse `Content-Range: bytes START-END/TOTAL`. */
function contentRange(h: string | string[] | undefined) {
  const v = Array.isArray(h) ? h[0] : h;
  const m = v ? /^bytes (?:(\d+)-(\d+)|\*)\/(\d+|\*)$/.exec(v.trim()) : null;
  if (!m) return undefined;
  return {
    start: m[1] === undefined ? undefined : Number(m[1]),
    total: m[3] === '*' ? undefined : Number(m[3]),
  };
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * Download `url` into `partPath`, resuming from whatever it already holds. On success the file
 * holds the complete body; on failure it keeps what arrived (for a later resume).
 */
export async function download(
  url: string,
  partPath: string,
  o: DownloadOptions = {},
): Promise<DownloadResult> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidArgumentError(`Invalid URL '${url}'`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new InvalidArgumentError(
      `Unsupported URL scheme '${parsed.protocol}' in '${url}': use http or https`,
    );
  const timeoutMs = o.timeoutMs ?? 30_000;
  const retries = o.retries ?? 3;
  const maxBytes = o.maxBytes ?? 1024 * 1024 * 1024;
  const own = o.dispatcher ? undefined : defaultDispatcher(o.env ?? process.env, timeoutMs);
  // Follow redirects (release downloads are usually behind one), at most 5.
  const dispatcher = (o.dispatcher ?? own!).compose(interceptors.redirect({ maxRedirections: 5 }));
  const resumedAt: number[] = [];
  let lastError = '';
  try {
    for (let attempt = 1; attempt <= retries + 1; attempt++) {
      o.signal?.throwIfAborted();
      if (attempt > 1) {
        const delay = (o.retryDelayMs ?? 500) * 2 ** (attempt - 2);
        await sleep(delay, undefined, o.signal ? { signal: o.signal } : {}).catch(() => {
          throw new AbortError('Download cancelled');
        });
      }
      const have = await fileSize(partPath);
      try {
        const size = await attemptOnce(url, partPath, have, attempt, {
          dispatcher,
          timeoutMs,
          maxBytes,
          resumedAt,
          ...(o.signal ? { signal: o.signal } : {}),
          ...(o.onProgress ? { onProgress: o.onProgress } : {}),
        });
        return { size, attempts: attempt, resumedAt };
      } catch (err) {
        if (o.signal?.aborted) throw new AbortError('Download cancelled', { cause: err });
        if (err instanceof PermanentError)
          throw new EnvironmentError(`Could not download '${url}': ${err.message}`, {
            code: 'VMF_FW_HTTP',
          });
        lastError = describe(err, timeoutMs);
      }
    }
  } finally {
    await own?.close().catch(() => undefined);
  }
  throw new EnvironmentError(
    `Could not download '${url}': ${lastError} (${retries + 1} attempt${retries ? 's' : ''})`,
    { code: 'VMF_FW_HTTP' },
  );
}

interface AttemptContext {
  dispatcher: Dispatcher;
  timeoutMs: number;
  maxBytes: number;
  resumedAt: number[];
  signal?: AbortSignal;
  onProgress?: DownloadOptions['onProgress'];
}

async function attemptOnce(
  url: string,
  partPath: string,
  have: number,
  attempt: number,
  c: AttemptContext,
): Promise<number> {
  const headers: Record<string, string> = {
    'accept-encoding': 'identity', // Range offsets must be file offsets
    'user-agent': 'vmforge-firmware-fetch',
  };
  if (have > 0) headers['range'] = `bytes=${have}-`;
  const res = await request(url, {
    dispatcher: c.dispatcher,
    method: 'GET',
    headers,
    headersTimeout: c.timeoutMs,
    bodyTimeout: c.timeoutMs,
    ...(c.signal ? { signal: c.signal } : {}),
  });
  const status = res.statusCode;
  let offset: number;
  let total: number | undefined;
  if (status === 416 && have > 0) {
    // Our part file is at least as long as the resource: complete if the lengths agree.
    res.body.resume();
    const cr = contentRange(res.headers['content-range']);
    if (cr?.total === have) return have;
    await truncate(partPath, 0);
    throw new Error('the partial download no longer matches the server copy; restarting');
  }
  if (status === 206) {
    const cr = contentRange(res.headers['content-range']);
    if (!cr || cr.start !== have) {
      res.body.resume();
      await truncate(partPath, 0);
      throw new Error(
        `the server resumed at the wrong offset (${String(res.headers['content-range'])})`,
      );
    }
    offset = have;
    total = cr.total;
    c.resumedAt.push(have);
  } else if (status >= 200 && status < 300) {
    offset = 0; // a full response (the server ignored Range): start over
    const len = Number(res.headers['content-length']);
    total = Number.isSafeInteger(len) ? len : undefined;
  } else {
    res.body.resume();
    const text = `HTTP ${status}${status === 404 ? ' Not Found' : ''}`;
    if (status === 408 || status === 429 || status >= 500) throw new Error(`server error: ${text}`);
    throw new PermanentError(text);
  }
  if (total !== undefined && total > c.maxBytes) {
    res.body.destroy();
    throw new PermanentError(`the file is ${total} bytes, more than the ${c.maxBytes}-byte limit`);
  }
  const fh = await open(partPath, offset === 0 ? 'w' : 'r+');
  let pos = offset;
  try {
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      if (pos + buf.length > c.maxBytes)
        throw new PermanentError(`the file exceeds the ${c.maxBytes}-byte limit`);
      await fh.write(buf, 0, buf.length, pos);
      pos += buf.length;
      c.onProgress?.({ received: pos, ...(total !== undefined ? { total } : {}), attempt });
    }
  } finally {
    await fh.close();
  }
  if (total !== undefined && pos !== total)
    throw new Error(`the transfer ended at ${pos} of ${total} bytes`);
  return pos;
}

export async function removePart(path: string): Promise<void> {
  await rm(path, { force: true });
}
