// Argument handling of resize and amend, the qemu-progress output of amend -p, and the crash
// test's reading of `qemu-img check` output.
import { describe, expect, it } from 'vitest';
import { captureIO, CliExit } from '../../src/cli/io.js';
import { getoptLong } from '../../src/cli/img/getopt.js';
import { QemuProgress } from '../../src/cli/img/qemu-progress.js';
import { amendOptionHelp, parseAmendOptions } from '../../src/img/amend.js';
import { parsePreallocation, parseResizeSize } from '../../src/img/resize.js';
import { dangerousFindings } from '../support/check-findings.js';

const spec = {
  short: { f: true, q: false, h: false },
  long: { help: false, object: true, 'image-opts': false, preallocation: true, shrink: false },
};

function thrown(fn: () => unknown): CliExit {
  try {
    fn();
  } catch (err) {
    if (err instanceof CliExit) return err;
    throw err;
  }
  throw new Error('did not throw');
}

describe('getoptLong (qemu-img resize argument parsing)', () => {
  it('parses clusters, attached values, long prefixes and permuted operands', () => {
    expect(getoptLong(['-qf', 'raw', 'a.img', '--shr', '--preallocation=full'], spec)).toEqual({
      options: [
        { name: 'q', value: undefined },
        { name: 'f', value: 'raw' },
        { name: 'shrink', value: undefined },
        { name: 'preallocation', value: 'full' },
      ],
      operands: ['a.img'],
    });
    expect(getoptLong(['-fqcow2', '--preallocation', 'off', '--', '-x'], spec)).toEqual({
      options: [
        { name: 'f', value: 'qcow2' },
        { name: 'preallocation', value: 'off' },
      ],
      operands: ['-x'],
    });
  });

  it("names the option as QEMU's argv[optind - 1] does", () => {
    expect(thrown(() => getoptLong(['-z', 'a'], spec)).message).toBe("unrecognized option '-z'");
    // Inside a cluster getopt has not advanced: the previous element is named.
    expect(thrown(() => getoptLong(['b.qcow2', '-1M'], spec)).message).toBe(
      "unrecognized option 'b.qcow2'",
    );
    expect(thrown(() => getoptLong(['a', '-f'], spec)).message).toBe(
      "missing argument for option '-f'",
    );
    expect(thrown(() => getoptLong(['--bogus'], spec)).message).toBe(
      "unrecognized option '--bogus'",
    );
    expect(thrown(() => getoptLong(['--shrink=1'], spec)).usageHint).toBe(true);
  });
});

describe('resize size and preallocation arguments', () => {
  it('reads [+|-]SIZE with qemu_strtosz suffixes', () => {
    expect(parseResizeSize('+1G')).toEqual({ relative: 1, bytes: 1n << 30n });
    expect(parseResizeSize('-512')).toEqual({ relative: -1, bytes: 512n });
    expect(parseResizeSize('1.5M')).toEqual({ relative: 0, bytes: 1572864n });
    expect(() => parseResizeSize('+1x')).toThrow("Parameter 'size' expects a non-negative number");
    expect(() => parseResizeSize('99999E')).toThrow("is out of range for parameter 'size'");
    expect(parsePreallocation('falloc')).toBe('falloc');
    expect(parsePreallocation('sparse')).toBeUndefined();
  });
});

describe('amend options', () => {
  it('maps -o to the qcow2 amend steps in QEMU order', () => {
    expect(parseAmendOptions('compat=0.10,lazy_refcounts=on,refcount_bits=8,size=1M')).toEqual({
      size: 1048576,
      version: 2,
      lazyRefcounts: true,
      refcountBits: 8,
    });
    expect(parseAmendOptions('compat=v3')).toEqual({ version: 3 });
    // int refcount_bits = qemu_opt_get_number(): the upper bits vanish.
    expect(parseAmendOptions('refcount_bits=4294967312').refcountBits).toBe(16);
    expect(parseAmendOptions('encrypt.keyslot=1')).toEqual({ encryption: true });
  });

  it('explains create-only options and rejects the rest', () => {
    let err: unknown;
    try {
      parseAmendOptions('cluster_size=4k');
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({
      message: "Invalid parameter 'cluster_size'",
      hint: 'This option is only supported for image creation',
    });
    expect(() => parseAmendOptions('compat=2')).toThrow('Unknown compatibility level 2');
    expect(() => parseAmendOptions('lazy_refcounts=maybe')).toThrow(
      "Parameter 'lazy_refcounts' expects 'on' or 'off'",
    );
  });

  it('prints the qcow2 amend option list', () => {
    const help = amendOptionHelp('qcow2');
    expect(help.split('\n')[0]).toBe("Amend options for 'qcow2':");
    expect(help).toContain('  refcount_bits=<num>    - Width of a reference count entry in bits\n');
    expect(help).not.toContain('cluster_size');
    expect(() => amendOptionHelp('raw')).toThrow(
      "Format driver 'raw' does not support option amendment",
    );
  });
});

describe('QemuProgress (util/qemu-progress.c)', () => {
  it('redraws at 0, every 1% step and 100, then ends the line', () => {
    const cap = captureIO();
    const p = new QemuProgress(cap.io);
    p.print(0, 0);
    p.status(1, 300); // 0.33%: not printed
    p.status(4, 300); // 1.33%
    p.status(5, 300); // 1.67%: within 1% of the last print
    p.print(100, 0);
    p.end();
    expect(cap.out).toBe('    (0.00/100%)\r    (1.33/100%)\r    (100.00/100%)\r\n');
    const quiet = captureIO();
    const q = new QemuProgress(undefined);
    q.print(50, 0);
    q.end();
    expect(quiet.out).toBe('');
  });
});

describe('reading qemu-img check after a crash', () => {
  it('accepts leaks and COPIED flags that are missing or sit on leaked clusters only', () => {
    const text = [
      'Leaked cluster 55 refcount=2 reference=1',
      'ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=8000000000370000 refcount=2',
      'ERROR OFLAG_COPIED data cluster: l2_entry=50000 refcount=1',
    ].join('\n');
    expect(dangerousFindings(text, 65536)).toEqual([]);
  });

  it('flags refcounts below the references and COPIED on really shared clusters', () => {
    expect(dangerousFindings('ERROR cluster 5 refcount=1 reference=2', 65536)).toHaveLength(1);
    expect(
      dangerousFindings(
        'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=2',
        65536,
      ),
    ).toHaveLength(1);
  });
});
