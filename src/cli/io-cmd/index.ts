// vmforge io [-f fmt] [-r] -c COMMAND... IMAGE: a qemu-io compatible subset for scripting data
// into and out of images: write [-P pattern] [-z [-u]] OFF LEN, read [-P pattern] [-v] OFF LEN,
// discard OFF LEN, flush. Output lines follow qemu-io's (the timing figures are ours).

import { Command } from 'commander';
import type { BlockDevice } from '../../block/device.js';
import { printfFixed, strtosz } from '../../core/index.js';
import { openImage, type SupportedFormat } from '../../image/open.js';
import { CliExit, type CliIO } from '../io.js';
import { collect, qemuStyle, runProgram, type ToolContext } from '../program.js';

/** qemu-io's cvtstr(): "4 KiB", "1.500 MiB", "512 bytes". */
function cvtstr(value: number): string {
  const units: [number, string][] = [
    [2 ** 60, 'EiB'],
    [2 ** 50, 'PiB'],
    [2 ** 40, 'TiB'],
    [2 ** 30, 'GiB'],
    [2 ** 20, 'MiB'],
    [2 ** 10, 'KiB'],
  ];
  for (const [div, suffix] of units) {
    if (value >= div) return `${printfFixed(value / div, 3).replace(/\.000$/, '')} ${suffix}`;
  }
  return `${printfFixed(value, 6).replace(/\.000000$/, '')} bytes`;
}

function report(io: CliIO, op: string, offset: number, count: number, ms: number): void {
  const sec = Math.max(ms / 1000, 1e-9);
  io.stdout.write(`${op} ${count}/${count} bytes at offset ${offset}\n`);
  io.stdout.write(
    `${cvtstr(count)}, 1 ops; ${printfFixed(sec, 2).padStart(5, '0')} sec (${cvtstr(count / sec)}/sec and ${printfFixed(1 / sec, 4)} ops/sec)\n`,
  );
}

function num(text: string | undefined, what: string): number {
  const r = text === undefined ? undefined : strtosz(text);
  if (!r || !r.ok || r.value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CliExit(1, `invalid ${what} argument -- '${text ?? ''}'`);
  }
  return Number(r.value);
}

function pattern(text: string): number {
  const v = Number.parseInt(text, text.startsWith('0x') ? 16 : 10);
  if (!Number.isInteger(v) || v < 0 || v > 255)
    throw new CliExit(1, `invalid pattern -- '${text}'`);
  return v;
}

/** Run one qemu-io style command line against an open device. */
async function runCommand(dev: BlockDevice, line: string, io: CliIO): Promise<void> {
  const words = line.trim().split(/\s+/);
  const name = words.shift();
  const flags = new Map<string, string | true>();
  const args: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '-P') flags.set('P', words[++i] ?? '');
    else if (/^-[zuvq]+$/.test(w)) for (const ch of w.slice(1)) flags.set(ch, true);
    else args.push(w);
  }
  const t0 = performance.now();
  switch (name) {
    case 'write': {
      const offset = num(args[0], 'offset');
      const length = num(args[1], 'length');
      if (flags.has('z')) await dev.writeZeroes(offset, length, { mayUnmap: flags.has('u') });
      else {
        const p = flags.get('P');
        const buf = new Uint8Array(length).fill(typeof p === 'string' ? pattern(p) : 0xcd);
        await dev.write(buf, offset);
      }
      if (!flags.has('q')) report(io, 'wrote', offset, length, performance.now() - t0);
      return;
    }
    case 'read': {
      const offset = num(args[0], 'offset');
      const length = num(args[1], 'length');
      const buf = new Uint8Array(length);
      await dev.read(buf, offset);
      const p = flags.get('P');
      if (typeof p === 'string') {
        const want = pattern(p);
        if (buf.some((b) => b !== want)) {
          io.stdout.write(`Pattern verification failed at offset ${offset}, ${length} bytes\n`);
          throw new CliExit(1);
        }
      }
      if (flags.has('v')) io.stdout.write(hexdump(buf, offset));
      if (!flags.has('q')) report(io, 'read', offset, length, performance.now() - t0);
      return;
    }
    case 'discard': {
      const offset = num(args[0], 'offset');
      const length = num(args[1], 'length');
      await dev.discard(offset, length);
      if (!flags.has('q')) report(io, 'discard', offset, length, performance.now() - t0);
      return;
    }
    case 'flush':
      await dev.flush();
      return;
    default:
      throw new CliExit(
        1,
        `command "${name ?? ''}" not found (supported: write, read, discard, flush)`,
      );
  }
}

function hexdump(buf: Uint8Array, offset: number): string {
  let out = '';
  for (let i = 0; i < buf.length; i += 16) {
    const row = buf.subarray(i, i + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const text = [...row]
      .map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.'))
      .join('');
    out += `${(offset + i).toString(16).padStart(8, '0')}:  ${hex.padEnd(47)}  ${text}\n`;
  }
  return out;
}

export async function runIo(argv: string[], io: CliIO): Promise<number> {
  const ctx: ToolContext = { io, tool: 'vmforge io', debug: io.env['VMFORGE_DEBUG'] === '1' };
  const program = qemuStyle(new Command('vmforge io'), ctx);
  program
    .argument('<image>')
    .option('-c, --cmd <command>', 'command to run (repeatable)', collect)
    .option('-f, --format <fmt>', 'image format (probed when absent)')
    .option('-r, --read-only', 'open read-only')
    .action(
      async (image: string, opts: { cmd?: string[]; format?: string; readOnly?: boolean }) => {
        const dev = await openImage(image, {
          ...(opts.format ? { format: opts.format as SupportedFormat } : {}),
          readOnly: opts.readOnly ?? false,
        });
        try {
          for (const line of opts.cmd ?? []) await runCommand(dev, line, io);
        } finally {
          await dev.close();
        }
      },
    );
  return runProgram(program, argv, ctx);
}
