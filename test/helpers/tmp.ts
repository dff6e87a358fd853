import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh private temp directory for one test. */
export function tempDir(prefix = 'physbits-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
