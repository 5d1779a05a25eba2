// CLI layer of measure / compare / dd without real tools: the -p progress line, -o list
// validation, dd operands, argument errors, exit codes, and an end-to-end run on engine-made
// images (the interop tests hold the byte-for-byte comparison with qemu-img).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { accumulateOptions, isValidOptionList } from '../../src/cli/img/option-list.js';
import { QemuProgress } from '../../src/cli/img/qemu-progress.js';
import { CliExit, captureIO } from '../../src/cli/io.js';
import { createImage, openImage } from '../../src/image/index.js';
import { img } from '../support/run.js';
import { tempDir } from '../support/tmp.js';

describe('QemuProgress', () => {
  it('prints like qemu_progress_print with min_skip 2', () => {
    const io = captureIO();
    const p = new QemuProgress(io.io, 2.0);
    p.print(0, 100);
    for (let i = 0; i < 100; i++) p.advance(1, 100); // 1% steps
    p.end();
    const shown = io.out.split('\r').filter(Boolean);
    expect(shown[0]).toBe('    (0.00/100%)');
    expect(shown[1]).toBe('    (3.00/100%)'); // the first value more than 2 above 0
    expect(shown.slice(-2)).toEqual(['    (100.00/100%)', '\n']);
    expect(shown.length).toBe(2 + 33 + 1); // 0, every third percent up to 99, 100, end
    const q = new QemuProgress(undefined, 2);
    q.print(0, 100);
    q.advance(5, 10);
    q.end();
  });

  it('uses C float arithmetic', () => {
    const io = captureIO();
    const p = new QemuProgress(io.io, 2.0);
    for (let i = 0; i < 3; i++) p.advance(1, 3);
    // (float)1/3*100 three times sums to 100.000008 in float and is capped at 100
    expect(io.out).toBe('    (33.33/100%)\r    (66.67/100%)\r    (100.00/100%)\r');
  });
});

describe('-o option lists', () => {
  it('validates each -o as accumulate_options does', () => {
    expect(isValidOptionList('a=1')).toBe(true);
    expect(isValidOptionList('a=1,,')).toBe(true);
    expect(isValidOptionList('')).toBe(false);
    expect(isValidOptionList(',a')).toBe(false);
    expect(isValidOptionList('a,')).toBe(false);
    expect(accumulateOptions(['a=1', 'b=2'])).toBe('a=1,b=2');
    expect(accumulateOptions(undefined)).toBeUndefined();
    expect(() => accumulateOptions(['a=1', 'x,'])).toThrow(CliExit);
    expect(() => accumulateOptions(['a=1', 'x,'])).toThrow('Invalid option list: x,');
  });
});

describe('argument errors (no tools needed)', () => {
  it('measure', async () => {
    expect(await img(['measure'])).toMatchObject({
      code: 1,
      stderr: 'vmforge-img: Either --size N or one filename must be specified.\n',
    });
    expect((await img(['measure', '--size', '1G', '--object', 'secret,id=a'])).stderr).toMatch(
      /--object is not supported/,
    );
    expect(await img(['measure', '--size', '1G', '-o', 'bogus=1', '-O', 'qcow2'])).toMatchObject({
      code: 1,
      stderr:
        "vmforge-img: Invalid parameter 'bogus'\nvmforge-img: Invalid options for file format 'qcow2'\n",
    });
    expect(await img(['measure', '--size', 'x'])).toMatchObject({
      code: 1,
      stderr:
        'vmforge-img: Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n' +
        'vmforge-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n',
    });
    expect(await img(['measure', '--size', '1G', '-O', 'qcow2', '--output=json'])).toMatchObject({
      code: 0,
      stdout: '{\n    "required": 393216,\n    "fully-allocated": 1074135040\n}\n',
    });
  });

  it('compare', async () => {
    expect(await img(['compare', 'a'])).toMatchObject({
      code: 1,
      stderr:
        "vmforge-img: Expecting two image file names\nTry 'vmforge-img --help' for more information\n",
    });
    expect((await img(['compare', '-T', 'x', 'a', 'b'])).code).toBe(2);
    const r = await img(['compare', '-p', 'nosuch-a', 'nosuch-b']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('\n'); // qemu_progress_end() still runs
    expect(r.stderr).toMatch(/^vmforge-img: Could not open 'nosuch-a': /);
  });

  it('dd', async () => {
    expect(await img(['dd'])).toMatchObject({
      code: 1,
      stderr: 'vmforge-img: Must specify both input and output files\n',
    });
    expect((await img(['dd', 'if=a', 'oops'])).stderr).toBe(
      'vmforge-img: unrecognized operand oops\n',
    );
    expect((await img(['dd', 'if=a', 'oops=1'])).stderr).toBe(
      'vmforge-img: unrecognized operand oops\n',
    );
    expect((await img(['dd', 'bs=0', 'if=a', 'of=b'])).stderr).toBe(
      'vmforge-img: Invalid bs specified. Must be between 1 and 2147483647.\n',
    );
    expect((await img(['dd', 'count=1x', 'if=a', 'of=b'])).stderr).toMatch(
      /^vmforge-img: Invalid count specified. You may use/,
    );
  });
});

describe('end to end on engine-made images', () => {
  it('compare exits 0 / 1 with the verdict on stdout, -q silences it', async () => {
    const dir = await tempDir();
    const a = join(dir, 'a.qcow2');
    await createImage(a, { format: 'qcow2', size: 1 << 20 });
    const dev = await openImage(a, { readOnly: false });
    await dev.write(new Uint8Array(4096).fill(1), 8192);
    await dev.close();
    const b = join(dir, 'b.raw');
    const data = Buffer.alloc(1 << 20);
    data.fill(1, 8192, 12288);
    await writeFile(b, data);
    expect(await img(['compare', a, b])).toMatchObject({
      code: 0,
      stdout: 'Images are identical.\n',
    });
    data[10_000] = 2;
    await writeFile(b, data);
    expect(await img(['compare', a, b])).toMatchObject({
      code: 1,
      stdout: 'Content mismatch at offset 9728!\n',
    });
    expect(await img(['compare', '-q', a, b])).toMatchObject({ code: 1, stdout: '' });
  });

  it('dd then measure', async () => {
    const dir = await tempDir();
    const input = join(dir, 'in.raw');
    await writeFile(input, Buffer.alloc(200_000, 3));
    const out = join(dir, 'out.qcow2');
    expect(await img(['dd', '-O', 'qcow2', 'bs=64k', `if=${input}`, `of=${out}`])).toMatchObject({
      code: 0,
      stdout: '',
      stderr: '',
    });
    const m = await img(['measure', '-O', 'qcow2', out]);
    expect(m.code).toBe(0);
    expect(m.stdout).toMatch(/^required size: \d+\nfully allocated size: \d+\nbitmaps size: 0\n$/);
    expect(await img(['compare', input, out])).toMatchObject({ code: 0 });
  });
});
