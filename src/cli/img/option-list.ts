// qemu-img's handling of repeated -o options (qemu-img.c accumulate_options and
// is_valid_option_list): each -o must be a non-empty list that neither starts with a comma nor
// ends with an odd number of commas (",," is an escaped comma); they are joined with commas.
import { CliExit } from '../io.js';

export function isValidOptionList(text: string): boolean {
  if (text === '' || text.startsWith(',')) return false;
  let i = text.length;
  while (i > 0 && text[i - 1] === ',') i--;
  return (text.length - i) % 2 === 0;
}

/** Join the -o values in order; the first invalid one ends the command with QEMU's message. */
export function accumulateOptions(values: readonly string[] | undefined): string | undefined {
  let options: string | undefined;
  for (const v of values ?? []) {
    if (!isValidOptionList(v)) throw new CliExit(1, `Invalid option list: ${v}`);
    options = options === undefined ? v : `${options},${v}`;
  }
  return options;
}
