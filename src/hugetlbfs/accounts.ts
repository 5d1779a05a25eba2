// uid=/gid= for hugetlbfs are numbers to the kernel; hugeadm users give names
// (--create-user-mounts=<user>), so names are looked up in the host's /etc/passwd and /etc/group.

import { InvalidArgumentError } from '../core/index.js';
import type { HugetlbHost } from './host.js';

async function lookup(host: HugetlbHost, file: string, name: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await host.readText(file);
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields[2] !== undefined && /^\d+$/.test(fields[2])) {
      return Number(fields[2]);
    }
  }
  return undefined;
}

/** A numeric id, or a user (`kind` 'user') / group name resolved on the host. */
export async function resolveAccountId(
  host: HugetlbHost,
  text: string,
  kind: 'user' | 'group',
): Promise<number> {
  if (/^\d+$/.test(text)) return Number(text);
  const id = await lookup(host, kind === 'user' ? '/etc/passwd' : '/etc/group', text);
  if (id === undefined) throw new InvalidArgumentError(`Unknown ${kind}: ${text}`);
  return id;
}
