// A small GNU getopt_long for the qemu-img commands whose argument handling commander cannot
// express: `resize` takes its size from the end of argv before option parsing, so "-1G" is a
// size, not an option. Same results as glibc for what qemu-img accepts: permuted operands,
// clustered short options ("-qf fmt"), attached arguments ("-ffmt", "--opt=x"), unique long
// prefixes, "--" ending options, and QEMU's messages naming argv[optind - 1].

import { usageError } from '../io.js';

export interface GetoptSpec {
  /** Short options: letter -> takes an argument. */
  short: Record<string, boolean>;
  /** Long options: name -> takes an argument. */
  long: Record<string, boolean>;
}

export interface GetoptResult {
  /** Options in order, by short letter or long name. */
  options: { name: string; value: string | undefined }[];
  operands: string[];
}

/** Parse `args` (argv without the command name) like getopt_long(":<short>", long). */
export function getoptLong(args: string[], spec: GetoptSpec): GetoptResult {
  const options: GetoptResult['options'] = [];
  const operands: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      operands.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const exact = Object.hasOwn(spec.long, name) ? [name] : [];
      const matches = exact.length
        ? exact
        : Object.keys(spec.long).filter((n) => n.startsWith(name));
      if (matches.length !== 1 || name === '') {
        throw usageError(`unrecognized option '${arg}'`);
      }
      const full = matches[0]!;
      let value: string | undefined;
      if (spec.long[full]) {
        if (eq >= 0) value = arg.slice(eq + 1);
        else if (i + 1 < args.length) value = args[++i]!;
        else throw usageError(`missing argument for option '${arg}'`);
      } else if (eq >= 0) {
        throw usageError(`unrecognized option '${arg}'`);
      }
      options.push({ name: full, value });
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const c = arg[j]!;
        const last = j === arg.length - 1;
        if (!Object.hasOwn(spec.short, c)) {
          // getopt has not advanced optind inside a cluster: argv[optind - 1] is the previous
          // element (the command name for the first one).
          throw usageError(`unrecognized option '${last ? arg : i > 0 ? args[i - 1]! : arg}'`);
        }
        if (spec.short[c]) {
          let value: string;
          if (!last) value = arg.slice(j + 1);
          else if (i + 1 < args.length) value = args[++i]!;
          else throw usageError(`missing argument for option '${arg}'`);
          options.push({ name: c, value });
          break;
        }
        options.push({ name: c, value: undefined });
      }
      continue;
    }
    operands.push(arg);
  }
  return { options, operands };
}
