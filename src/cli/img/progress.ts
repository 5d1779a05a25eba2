// qemu-img -p progress: "    (12.34/100%)" redrawn in place with a carriage return
// (util/qemu-progress.c progress_simple_print), ending with a newline. With
// VMFORGE_PROGRESS=json, one JSON object per line instead, for pipelines.
import { printfFixed } from '../../core/index.js';
import type { CliIO } from '../io.js';

export function progressReporter(io: CliIO): {
  update: (percent: number) => void;
  end: () => void;
} {
  const json = io.env['VMFORGE_PROGRESS'] === 'json';
  let last = -1;
  return {
    update(percent: number) {
      const p = Math.min(100, Math.max(0, percent));
      if (json) {
        if (Math.floor(p) === last) return;
        last = Math.floor(p);
        io.stdout.write(`${JSON.stringify({ progress: Number(printfFixed(p, 2)) })}\n`);
        return;
      }
      io.stdout.write(`    (${printfFixed(p, 2)}/100%)\r`);
    },
    end() {
      if (!json) io.stdout.write('\n');
    },
  };
}
