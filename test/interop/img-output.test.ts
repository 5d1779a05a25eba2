// Oracle test for src/cli/output: qemu-img 7.2 itself. For a corpus of images made by
// qemu-img/qemu-io (test/support/qemu-img-corpus.ts), run info / check / map / measure /
// snapshot -l, parse qemu-img's JSON into the QAPI types, print it again with our formatters
// and require the same bytes; feed the same parsed data to the human formatters and require
// qemu-img's human text byte for byte (and its exit status). Independent of vmforge's engine.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { encodeByteString } from '../../src/core/byte-string.js';
import {
  checkOutcome,
  formatCheckHuman,
  formatCheckJson,
  formatInfoChainHuman,
  formatInfoChainJson,
  formatInfoHuman,
  formatInfoJson,
  formatMap,
  formatMeasureHuman,
  formatMeasureJson,
  formatRepairSummary,
  formatSnapshotList,
  quoteJsonString,
} from '../../src/cli/output/index.js';
import type {
  BlockMeasureInfo,
  ImageCheck,
  ImageInfo,
  MapEntry,
} from '../../src/img/qapi-types.js';
import {
  buildCorpus,
  runCorpusCommand,
  type Corpus,
  type CorpusCommand,
} from '../support/qemu-img-corpus.js';
import { describeWithTools } from '../support/tools.js';

describeWithTools(['qemu-img', 'qemu-io'], 'output layer vs qemu-img 7.2', () => {
  let corpus: Corpus;
  let dir: string | undefined;
  const results = new Map<string, ReturnType<typeof runCorpusCommand>>();

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmforge-imgout-'));
    corpus = buildCorpus(dir);
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Each distinct command runs once: check -r changes its image. */
  function result(args: string[], tz: string): ReturnType<typeof runCorpusCommand> {
    const key = `${tz}\0${JSON.stringify(args)}`;
    let r = results.get(key);
    if (!r) {
      const cmd: CorpusCommand = { label: key, args, tz, kind: 'info', output: 'json' };
      r = runCorpusCommand(corpus, cmd);
      results.set(key, r);
    }
    return r;
  }

  /**
   * JSON.parse, then put back names that were not valid UTF-8 (qemu-img printed them as
   * \uFFFD): a parsed string is replaced by the corpus name that QEMU quotes identically.
   */
  function parse<T>(stdout: Buffer): T {
    const fix = (v: unknown): unknown => {
      if (typeof v === 'string' && /[\ufffd\0]/.test(v)) {
        return corpus.rawNames.find((raw) => JSON.parse(quoteJsonString(raw)) === v) ?? v;
      }
      if (Array.isArray(v)) return v.map(fix);
      if (v && typeof v === 'object') {
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fix(x)]));
      }
      return v;
    };
    return fix(JSON.parse(stdout.toString('utf8'))) as T;
  }

  function expectBytes(actual: string, expected: Buffer, label: string): void {
    const ours = Buffer.from(encodeByteString(actual));
    if (!ours.equals(expected)) {
      // Name the first line that differs; the byte comparison below is the real assertion.
      const a = ours.toString('latin1').split('\n');
      const b = expected.toString('latin1').split('\n');
      const i = a.findIndex((line, k) => line !== b[k]);
      throw new Error(
        `${label}: line ${i + 1} differs\n  ours:    ${JSON.stringify(a[i])}\n  qemu-img: ${JSON.stringify(b[i])}`,
      );
    }
    expect(ours.equals(expected), label).toBe(true);
  }

  /** Map entries with the file names qemu-img's human output shows (block status `file`). */
  function withFilenames(entries: MapEntry[], chain: ImageInfo[]): MapEntry[] {
    return entries.map((e) => {
      if (e.offset === undefined) return e;
      const image = chain[e.depth]!;
      const spec = image['format-specific'];
      const dataFile = spec?.type === 'qcow2' ? spec.data['data-file'] : undefined;
      return { ...e, filename: dataFile ?? image.filename };
    });
  }

  function ours(cmd: CorpusCommand, stdout: Buffer): { text: string; error?: string } {
    const data = cmd.data ? result(cmd.data, cmd.tz).stdout : stdout;
    const timeZone = cmd.tz;
    switch (cmd.kind) {
      case 'info':
        return cmd.output === 'json'
          ? { text: formatInfoJson(parse<ImageInfo>(data)) }
          : { text: formatInfoHuman(parse<ImageInfo>(data), { timeZone }) };
      case 'info-chain':
        return cmd.output === 'json'
          ? { text: formatInfoChainJson(parse<ImageInfo[]>(data)) }
          : { text: formatInfoChainHuman(parse<ImageInfo[]>(data), { timeZone }) };
      case 'check': {
        const check = parse<ImageCheck>(data);
        if (cmd.output === 'json') return { text: formatCheckJson(check) };
        const fixedL = check['leaks-fixed'] ?? 0;
        const fixedC = check['corruptions-fixed'] ?? 0;
        const summary = fixedL || fixedC ? formatRepairSummary(fixedL, fixedC) : '';
        return { text: summary + formatCheckHuman(check) };
      }
      case 'map': {
        // Leave out the zero-length entry qemu-img prints when there is nothing to map: the
        // printer must reproduce it from the start offset alone.
        const all = parse<MapEntry[]>(data);
        const entries = all.filter((e) => e.length > 0);
        const start = all[0]?.start ?? 0;
        const chain = parse<ImageInfo[]>(result(cmd.chainInfo!, 'UTC').stdout);
        return formatMap(withFilenames(entries, chain), cmd.output, start);
      }
      case 'measure':
        return cmd.output === 'json'
          ? { text: formatMeasureJson(parse<BlockMeasureInfo>(data)) }
          : { text: formatMeasureHuman(parse<BlockMeasureInfo>(data)) };
      case 'snapshot-list':
        return { text: formatSnapshotList(parse<ImageInfo>(data).snapshots ?? [], { timeZone }) };
    }
  }

  it('builds a corpus that exercises every output path', () => {
    expect(corpus.commands.length).toBeGreaterThan(150);
    expect(corpus.rawNames.length).toBeGreaterThanOrEqual(2);
  });

  it('prints what qemu-img prints, byte for byte, with its exit status', () => {
    const failures: string[] = [];
    let compared = 0;
    let checkFailures = 0;
    for (const cmd of corpus.commands) {
      const r = result(cmd.args, cmd.tz);
      const stderr = r.stderr.toString('utf8');
      try {
        if (cmd.kind === 'check' && r.code === 63) {
          // Raw has no check: nothing on stdout, the message on stderr.
          expect(r.stdout.length).toBe(0);
          expect(stderr).toBe('qemu-img: This image format does not support checks\n');
          continue;
        }
        if (cmd.kind === 'check' && r.code === 1 && r.stdout.length === 0) {
          // bdrv_check itself failed (e.g. -r leaks on broken refcounts): no result printed.
          expect(stderr, cmd.label).toMatch(/qemu-img: Check failed: [^\n]+\n$/);
          checkFailures++;
          continue;
        }
        const out = ours(cmd, r.stdout);
        expectBytes(out.text, r.stdout, cmd.label);
        compared++;
        if (out.error !== undefined) {
          expect(r.code, cmd.label).toBe(1);
          expect(stderr).toBe(`qemu-img: ${out.error}\n`);
        } else if (cmd.kind === 'check') {
          const outcome = checkOutcome(
            parse<ImageCheck>(cmd.data ? result(cmd.data, cmd.tz).stdout : r.stdout),
          );
          expect(r.code, cmd.label).toBe(outcome.exitCode);
          if (outcome.error) expect(stderr.endsWith(`qemu-img: ${outcome.error}\n`)).toBe(true);
        } else {
          expect(r.code, `${cmd.label}: ${stderr}`).toBe(0);
        }
      } catch (err) {
        failures.push(`${cmd.label}\n${(err as Error).message}`);
      }
    }
    expect(failures.join('\n\n')).toBe('');
    expect(compared).toBeGreaterThan(150);
    expect(checkFailures).toBeLessThanOrEqual(2); // only refbad's -r leaks pair
  });
});
