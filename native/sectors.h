/* Zero detection per 512-byte sector, shared by mapread.c and copychunks.c. */
#ifndef VMFORGE_SECTORS_H
#define VMFORGE_SECTORS_H

#include <stddef.h>
#include <stdint.h>

#define SECTOR 512

/* Whether the n bytes at p (n a multiple of 8, p 8-byte aligned) are all zero. */
static inline int sector_is_zero(const uint8_t *p, size_t n) {
  const uint64_t *w = (const uint64_t *)p;
  /* Data nearly always differs in its first or last word. */
  if (w[0] != 0 || w[n / 8 - 1] != 0) return 0;
  uint64_t acc = 0;
  for (size_t i = 1; i < n / 8 - 1; i++) acc |= w[i];
  return acc == 0;
}

#endif
