// Known firmware sources for `vmforge firmware fetch NAME`: pinned URL, digest and member.
// Kept small and verifiable: every entry must be a format fetch can unpack (raw, tar, tar.gz,
// gz, zip) and carry the SHA-256 of the exact file. Add entries with the digest you verified.

export interface CatalogueEntry {
  name: string;
  description: string;
  arch: string;
  url: string;
  sha256: string;
  member?: string;
  varsMember?: string;
  machines?: string[];
  features?: string[];
}

export const CATALOGUE: readonly CatalogueEntry[] = [];
