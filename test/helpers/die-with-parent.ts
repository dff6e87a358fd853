import { existsSync } from 'node:fs';

/**
 * A command prefix that makes a test's child (a daemon, a QEMU) die with the test worker, however the
 * worker ends: util-linux's setpriv sets the parent-death signal (prctl PR_SET_PDEATHSIG, kept across
 * exec) and execs the command, so the child's pid is still the command's. A daemon or guest left by
 * a failed test would otherwise run on with nobody reading its output.
 */
export const DIE_WITH_PARENT: readonly string[] = existsSync('/usr/bin/setpriv')
  ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--']
  : [];
