// Machine-type globs in descriptors ("virt-*", "pc-q35-*") are matched like libvirt does, with
// GLib's g_pattern_match_simple(): `*` matches any run of characters, `?` exactly one, and
// nothing else is special (no brackets, no escapes).

export function globMatch(pattern: string, text: string): boolean {
  // Iterative wildcard matching with single-star backtracking: O(|pattern|·|text|) worst case,
  // no recursion, so a hostile pattern cannot blow the stack or take exponential time.
  let p = 0;
  let t = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    const c = pattern[p];
    if (c === '?' || (c !== undefined && c !== '*' && c === text[t])) {
      p++;
      t++;
    } else if (c === '*') {
      starP = p++;
      starT = t;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (pattern[p] === '*') p++;
  return p === pattern.length;
}

export function isGlob(text: string): boolean {
  return /[*?]/.test(text);
}
