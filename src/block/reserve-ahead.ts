// Disk space reserved ahead of a sequential writer (convert's target), in large spans.
//
// Why: ext4 serves a buffered write into a hole with delayed allocation, reserving and tracking
// every 4 KiB block on its own; a write into an extent that fallocate() already reserved
// (unwritten) skips that, and is ~30% cheaper. On a 2-core VM that was 22-28 ms of a 1 GiB
// convert (docs/img-convert.md). Reserving each write separately placed each reservation on its
// own and fragmented the file; one fallocate(FALLOC_FL_KEEP_SIZE) per span keeps it contiguous.
// Spans double while the writer goes on sequentially (32 MiB, 64 MiB, ... up to `maxSpan`):
// where two spans are not adjacent on disk the data gets an extent boundary, and few spans
// means few of those. What the writer did not fill is given back, so the file ends up using no
// more space than plain writes would:
// - when the writer moves on to a new span, the old span's unwritten parts are punched out
//   (those below EOF; the ones past EOF wait for finish());
// - finish() punches what is left below the final size; the caller then frees the reservation
//   past EOF with ftruncate() to the same size (ext4 releases KEEP_SIZE blocks beyond i_size).
//
// A bulk writer that knows what it wrote only afterwards announces whole ranges, then reports
// what it left out (announce(), skipped(), settle()); spans it leaves meanwhile are given back
// once their batches are settled.
//
// Only regions known to hold nothing are reserved (from `unallocatedFrom` on, and never twice):
// punching "unwritten" parts of a span must never remove data that was there before.
import type { NativeFileOps } from './native.js';

const BLOCK = 4096;

export interface ReserveAheadOptions {
  /** Bytes reserved by the first fallocate (and after each jump past a hole). */
  span: number;
  /** Largest span, reached by doubling while the writes continue sequentially. @default span */
  maxSpan?: number;
  /**
   * Offset from which the file is known to be unallocated (all holes), e.g. 0 for a raw image
   * just created sparse. Default: the file's size when opened.
   */
  unallocatedFrom?: number;
  /**
   * Ranges that must end up allocated: never given back, and written with zeros at finish() if
   * the writer left them unwritten. For the first block of a new raw image (QEMU's
   * allocate_first_block), which convert's create leaves out: written at close, inside the
   * reserved span, it lands in the same extent as the data after it, as with delayed
   * allocation. Written by create, before the reservation, it took an extent of its own, and
   * an extra extent can cost an extent-tree block.
   */
  fill?: [start: number, end: number][];
}

type Interval = [start: number, end: number];

/** A span left before the batches announced into it were settled. */
interface LeftSpan {
  start: number;
  end: number;
  written: Interval[];
  /** Given back once settle() has covered this many batches. */
  batch: number;
}

export class ReserveAhead {
  readonly #fd: number;
  readonly #native: Required<Pick<NativeFileOps, 'preallocate' | 'punchHole'>>;
  readonly #firstSpan: number;
  readonly #maxSpan: number;
  #nextSpan: number;
  readonly #size: () => number;
  /** Everything at or past this offset is unallocated (or reserved by the current span). */
  #frontier: number;
  #spanStart = 0;
  #spanEnd = 0;
  /** Written parts of the current span, sorted and merged. */
  #written: Interval[] = [];
  /** Unwritten parts of earlier spans that lay past EOF when those spans were left. */
  #pastEof: Interval[] = [];
  readonly #fill: Interval[];
  /** Parts of `fill` not written yet. */
  #unfilled: Interval[];
  #reserved = false;
  #disabled = false;
  /** Batches announced (announce()) and settled (settle()): numbers past the last of each. */
  #announced = 0;
  #settled = 0;
  /** Spans left while announced batches were unsettled, given back when those settle. */
  #leaving: LeftSpan[] = [];
  /**
   * With announced batches, what settled spans give back waits here until it adds up to a
   * largest span, or finish(): a punch holds the file's lock, which the bulk writer's
   * concurrent writes then wait for (46 punches took 361 us each during a 1 GiB copy, 86 us
   * after it).
   */
  #punches: Interval[] = [];
  #punchBytes = 0;

  constructor(
    fd: number,
    native: Required<Pick<NativeFileOps, 'preallocate' | 'punchHole'>>,
    options: {
      span: number;
      maxSpan?: number | undefined;
      unallocatedFrom: number;
      fill?: Interval[] | undefined;
    },
    size: () => number,
  ) {
    this.#fd = fd;
    this.#native = native;
    this.#firstSpan = this.#nextSpan = options.span;
    this.#maxSpan = Math.max(options.span, options.maxSpan ?? options.span);
    this.#frontier = alignUp(options.unallocatedFrom);
    this.#fill = options.fill ?? [];
    this.#unfilled = this.#fill.map(([s, e]) => [s, e]);
    this.#size = size;
  }

  /**
   * Before writing [offset, offset + length): reserve a new span if the write reaches fresh
   * space, and count the range as written from now on. Counting it before the write, not after,
   * keeps a punch from racing a write in flight (a span left while another write is pending);
   * a write that then fails leaves its range reserved, which costs space, never data.
   */
  writing(offset: number, length: number): void {
    const end = offset + length;
    if (this.#pastEof.length > 0) this.#pastEof = subtract(this.#pastEof, offset, end, true);
    if (this.#unfilled.length > 0) this.#unfilled = subtract(this.#unfilled, offset, end, false);
    if (!this.#disabled && end > this.#frontier) this.#reserveFor(offset, end);
    this.#markWritten(offset, end);
  }

  /**
   * For a bulk writer that learns what it wrote only afterwards (convert's native copy loop,
   * which leaves out the zero runs it finds): writing() for a whole range of batch `batch`
   * (0, 1, 2, ... in order), then skipped() for its parts left unwritten, then settle(batch).
   * A span left while some announced batch is unsettled keeps its bookkeeping until then, so
   * what is given back is exactly what plain writes of the data would have left unwritten, and
   * no punch ever races a write in flight.
   */
  announce(offset: number, end: number, batch: number): void {
    this.#announced = Math.max(this.#announced, batch + 1);
    this.writing(offset, end - offset);
  }

  /**
   * Parts of announced ranges that were not written after all: [start, end) pairs, sorted and
   * not overlapping (one batch's worth at a time: the work is linear in the intervals).
   */
  skipped(ranges: ArrayLike<number>): void {
    let cuts: Interval[] = [];
    for (let i = 0; i + 1 < ranges.length; i += 2) cuts.push([ranges[i]!, ranges[i + 1]!]);
    // A `fill` range stays counted as written (never punched) and is owed by finish().
    for (const [s, e] of this.#fill) {
      for (const [a, b] of cuts) {
        const from = Math.max(s, a);
        const to = Math.min(e, b);
        if (from < to) this.#unfilled = [...subtract(this.#unfilled, from, to, false), [from, to]];
      }
      cuts = subtract(cuts, s, e, false);
    }
    if (cuts.length === 0) return;
    this.#written = subtractAll(this.#written, cuts);
    for (const span of this.#leaving) span.written = subtractAll(span.written, cuts);
  }

  /** Every range announced with a batch number up to `batch` has been written or skipped. */
  settle(batch: number): void {
    this.#settled = Math.max(this.#settled, batch + 1);
    if (this.#leaving.length === 0) return;
    const size = this.#size();
    const keep: LeftSpan[] = [];
    for (const span of this.#leaving) {
      if (span.batch <= this.#settled) this.#giveBack(span, size);
      else keep.push(span);
    }
    this.#leaving = keep;
  }

  #reserveFor(offset: number, end: number): void {
    // The part of this write inside the span being left is written too: not a gap.
    this.#markWritten(offset, end);
    const continues =
      this.#spanEnd > this.#spanStart && offset >= this.#spanStart && offset <= this.#spanEnd;
    this.#leaveSpan();
    const start = Math.max(alignDown(offset), this.#frontier);
    this.#nextSpan = continues ? Math.min(this.#nextSpan * 2, this.#maxSpan) : this.#firstSpan;
    const spanLength = Math.max(this.#nextSpan, alignUp(end) - start);
    if (!this.#native.preallocate(this.#fd, start, spanLength)) {
      // ENOSPC (plain writes may still fit), EOPNOTSUPP, ...: write without reserving.
      this.#disabled = true;
      return;
    }
    this.#reserved = true;
    this.#spanStart = start;
    this.#spanEnd = start + spanLength;
    this.#frontier = this.#spanEnd;
    this.#written = [];
    for (const [s, e] of this.#fill) this.#markWritten(s, e);
  }

  /** Record [offset, to) as written in the current span (what is not punched when left). */
  #markWritten(offset: number, to: number): void {
    const start = Math.max(offset, this.#spanStart);
    const end = Math.min(to, this.#spanEnd);
    if (start >= end) return;
    const w = this.#written;
    const last = w[w.length - 1];
    // The usual case: appending right after (or overlapping) the last written interval.
    if (last && start >= last[0] && start <= last[1]) {
      last[1] = Math.max(last[1], end);
      return;
    }
    w.push([start, end]);
    if (last && start < last[0]) mergeSorted(w);
  }

  /** Give back everything reserved and not written (call before closing the file). */
  finish(): { truncateTo?: number; zeroFill: Interval[] } {
    this.settle(Infinity);
    this.#leaveSpan();
    this.#flushPunches();
    this.#disabled = true;
    const zeroFill = this.#unfilled;
    this.#unfilled = [];
    if (!this.#reserved) return { zeroFill };
    const size = this.#size();
    for (const [s, e] of this.#pastEof) this.#punch(s, Math.min(e, size));
    this.#pastEof = [];
    return { truncateTo: size, zeroFill };
  }

  #leaveSpan(): void {
    if (this.#spanEnd === this.#spanStart) return;
    const span = { start: this.#spanStart, end: this.#spanEnd, written: this.#written };
    // Announced ranges not yet reported may still turn out unwritten (see announce()).
    if (this.#announced > this.#settled) this.#leaving.push({ ...span, batch: this.#announced });
    else this.#giveBack(span, this.#size());
    this.#spanStart = this.#spanEnd = 0;
    this.#written = [];
  }

  /** Punch a left span's unwritten whole blocks (those past EOF wait for finish()). */
  #giveBack(span: { start: number; end: number; written: Interval[] }, size: number): void {
    let at = span.start;
    for (const [s, e] of [...span.written, [span.end, span.end] as Interval]) {
      // Blocks partly written are allocated either way; only whole unwritten blocks go back.
      const gapStart = alignUp(at);
      const gapEnd = alignDown(s);
      if (gapEnd > gapStart) {
        this.#punch(gapStart, Math.min(gapEnd, size));
        if (gapEnd > size) this.#pastEof.push([Math.max(gapStart, size), gapEnd]);
      }
      at = Math.max(at, e);
    }
  }

  #punch(start: number, end: number): void {
    if (end <= start) return;
    if (this.#announced === 0 || this.#disabled) {
      this.#native.punchHole(this.#fd, start, end - start);
      return;
    }
    this.#punches.push([start, end]);
    this.#punchBytes += end - start;
    if (this.#punchBytes >= this.#maxSpan) this.#flushPunches();
  }

  #flushPunches(): void {
    for (const [start, end] of this.#punches) this.#native.punchHole(this.#fd, start, end - start);
    this.#punches = [];
    this.#punchBytes = 0;
  }
}

function alignDown(n: number): number {
  return Math.floor(n / BLOCK) * BLOCK;
}

function alignUp(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

/**
 * The intervals minus [start, end); with `blocks`, minus the whole blocks it touches (a block
 * partly written is allocated anyway).
 */
function subtract(w: Interval[], start: number, end: number, blocks: boolean): Interval[] {
  const from = blocks ? alignDown(start) : start;
  const to = blocks ? alignUp(end) : end;
  const out: Interval[] = [];
  for (const [s, e] of w) {
    if (e <= from || s >= to) {
      out.push([s, e]);
      continue;
    }
    if (from > s) out.push([s, from]);
    if (to < e) out.push([to, e]);
  }
  return out;
}

/** Sorted, disjoint intervals minus sorted, disjoint cuts, in one pass over both. */
function subtractAll(w: Interval[], cuts: Interval[]): Interval[] {
  const out: Interval[] = [];
  let first = 0; // the first cut that may still reach an interval
  for (const [start, end] of w) {
    while (first < cuts.length && cuts[first]![1] <= start) first++;
    let at = start;
    for (let k = first; at < end; k++) {
      const cut = cuts[k];
      if (!cut || cut[0] >= end) {
        out.push([at, end]);
        break;
      }
      if (cut[0] > at) out.push([at, cut[0]]);
      at = Math.max(at, cut[1]);
    }
  }
  return out;
}

/** Sort and merge overlapping or touching intervals in place. */
function mergeSorted(w: Interval[]): void {
  w.sort((a, b) => a[0] - b[0]);
  let k = 0;
  for (let i = 1; i < w.length; i++) {
    const cur = w[k]!;
    const next = w[i]!;
    if (next[0] <= cur[1]) cur[1] = Math.max(cur[1], next[1]);
    else w[++k] = next;
  }
  w.length = k + 1;
}
