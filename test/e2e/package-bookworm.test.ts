/**
 * The Debian package installed into a fresh Debian 12 (bookworm, Proxmox VE 8's base) tree with its
 * own nodejs 18 and QEMU 7.2 (test/helpers/package-tree.ts says what each test does).
 */
import { packageTests } from '../helpers/package-tree';

packageTests({
  release: 'Debian 12',
  suite: 'bookworm',
  tree: process.env.PHYSBITS_TEST_BOOKWORM_PACKAGE ?? '/var/cache/physbits-test/bookworm-package',
  nodeMajor: (major) => major === 18,
  qemu: 'QEMU 7.2',
});
