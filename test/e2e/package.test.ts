/**
 * The Debian package installed into a fresh Debian 13 (trixie) tree with its own nodejs and QEMU 10
 * (test/helpers/package-tree.ts says what each test does).
 */
import { packageTests } from '../helpers/package-tree';

packageTests({
  release: 'Debian 13',
  suite: 'trixie',
  tree: process.env.PHYSBITS_TEST_TRIXIE_PACKAGE ?? '/var/cache/physbits-test/trixie-package',
  nodeMajor: (major) => major >= 20,
  qemu: 'QEMU 10',
});
