/**
 * Every physbitsctl command's help: what it does, its options, its exit codes and an example. The
 * same text answers `physbitsctl CMD --help` and `physbitsctl help CMD`; man/physbitsctl.8.md says the
 * same at length. No imports: help and --version load nothing else.
 */

export interface CommandHelp {
  name: string;
  synopsis: string;
  summary: string;
  description: string;
  options: Array<[string, string]>;
  exit: string;
  example: string;
}

const EXIT_STATE = '0 ok/info, 1 warning, 2 critical, 3 unknown (a VM unreachable or not QEMU), 64 usage, 78 config';
const API = [
  '--api SOCKET',
  "the daemon's control socket (default: the config's api.socket, /run/physbits/api.sock)",
] as [string, string];
const CONFIG = ['--config FILE', 'config file (default /etc/physbits/config.json)'] as [string, string];
const JSON_OPT = ['--json', 'print the JSON document instead of a table'] as [string, string];
const PROMETHEUS = [
  '--prometheus URL',
  "read the fleet from this Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics) alone, no daemon asked (default: the config's fleet.prometheus)",
] as [string, string];
const WIDE = ['--wide', 'print the REASON column whole instead of cutting it to the terminal width'] as [
  string,
  string,
];

export const COMMANDS: CommandHelp[] = [
  {
    name: 'scan',
    synopsis: 'scan [--json] [--wide] [--config FILE] [--socket PATH]...',
    summary: 'check QMP sockets now, without the daemon',
    description:
      "Connects straight to each QMP socket named with --socket (else the config's discovery.sockets globs),\n" +
      "reads each guest's phys-bits and memory layout, judges it against this host and the static peers,\n" +
      'and prints a table or the status document. A --socket with glob characters is expanded.',
    options: [
      JSON_OPT,
      WIDE,
      CONFIG,
      ['--socket PATH', 'a QMP socket or a glob of them; repeatable; overrides discovery.sockets'],
    ],
    exit: `the worst state over every VM: ${EXIT_STATE}`,
    example: 'physbitsctl scan --socket /run/qemu/web1.qmp',
  },
  {
    name: 'status',
    synopsis: 'status [--json] [--wide] [--api SOCKET] [--config FILE]',
    summary: "the running daemon's view",
    description: 'Asks the running daemon for its status document (the same document as `scan --json`).',
    options: [JSON_OPT, WIDE, API, CONFIG],
    exit: `the worst state over every VM: ${EXIT_STATE}; 3 also when the daemon cannot be reached`,
    example: 'physbitsctl status --json',
  },
  {
    name: 'watch',
    synopsis: 'watch [--json] [--api SOCKET] [--config FILE]',
    summary: "stream the daemon's events",
    description:
      "Follows the daemon's events (verdict changes, refusals, alerts, VMs coming and going), one line\n" +
      'each on stdout, until interrupted. Says on stderr when it is connected and when the daemon goes\n' +
      'away, so that stdout holds events only.',
    options: [['--json', 'one JSON object per event'], API, CONFIG],
    exit: '0 stopped by Ctrl-C or SIGTERM, 3 the daemon cannot be reached or went away, 64 usage, 78 config',
    example: 'physbitsctl watch',
  },
  {
    name: 'check-migration',
    synopsis: 'check-migration VM --to PEER [--json] [--api SOCKET] [--config FILE]',
    summary: 'may VM migrate to PEER?',
    description:
      'Asks the daemon whether the guest VM may migrate to the peer host PEER (config peers[].name, or a\n' +
      'host fleet.prometheus lists: the lower of the two widths decides).',
    options: [
      ['--to PEER', 'the destination host, as named in peers[] or in Prometheus (required)'],
      JSON_OPT,
      API,
      CONFIG,
    ],
    exit: '0 allowed, 2 refused, 3 the daemon cannot be reached, 64 usage (unknown VM or peer), 78 config',
    example: 'physbitsctl check-migration web1 --to hv2',
  },
  {
    name: 'fleet',
    synopsis: 'fleet [--json] [--api SOCKET] [--config FILE] [--prometheus URL]',
    summary: 'every guest x every host: fits or not',
    description:
      "Every guest of this host and its live peers against every host's limit, from the daemon; or, with\n" +
      '--prometheus (or fleet.prometheus), every host and guest a Prometheus-compatible API has scraped.',
    options: [JSON_OPT, API, CONFIG, PROMETHEUS],
    exit: '0 every guest fits, 2 a guest does not fit a reachable host, 3 a host unreachable or the daemon (or Prometheus) down, 64 usage, 78 config',
    example: 'physbitsctl fleet --prometheus http://prometheus:9090',
  },
  {
    name: 'advise',
    synopsis: 'advise [VM] [--pool-bits N] [--json] [--api SOCKET] [--config FILE] [--prometheus URL]',
    summary: 'the setting that makes each guest safe across its pool',
    description:
      'For each guest (or only VM), the phys-bits setting that fits every host of its pool, written for\n' +
      'QEMU, libvirt and Proxmox, and whether its memory layout fits that width.',
    options: [
      ['--pool-bits N', "plan for a pool of this width (32-52) instead of the hosts' narrowest"],
      JSON_OPT,
      API,
      CONFIG,
      PROMETHEUS,
    ],
    exit: '0 every guest already safe, 1 a guest needs the change, 3 a host or guest unknown or the daemon (or Prometheus) down, 64 usage, 78 config',
    example: 'physbitsctl advise web1 --pool-bits 39',
  },
  {
    name: 'libvirt-hook',
    synopsis: 'libvirt-hook [--config FILE] DOMAIN OPERATION SUBOP EXTRA',
    summary: "/etc/libvirt/hooks/qemu's entry point (domain XML on stdin)",
    description:
      'Called by libvirt with the domain XML on standard input. Refuses `prepare` and `migrate` of a guest\n' +
      'wider than this host by exiting non-zero; every other operation is allowed. XML it cannot judge\n' +
      'and a config that cannot be loaded refuse those two, unless libvirtHook.failClosed is false.',
    options: [CONFIG],
    exit: '0 allowed, 1 refused, 78 refused because the config cannot be loaded (libvirt shows the one line on stderr)',
    example: 'printf \'#!/bin/sh\\nexec physbitsctl libvirt-hook "$@"\\n\' > /etc/libvirt/hooks/qemu',
  },
  {
    name: 'proxmox-hook',
    synopsis:
      'proxmox-hook [--config FILE] VMID PHASE | proxmox-hook --install [--storage ID] [--config FILE] [VMID...]',
    summary: 'a Proxmox VE hookscript (hookscript: local:snippets/...), and its installer',
    description:
      "Called by qemu-server as `<script> VMID PHASE`. On pre-start it reads the VM's config from\n" +
      'proxmox.configDir (nodes/$PVE_MIGRATED_FROM/qemu-server/VMID.conf on a migration target), works\n' +
      'out the width and memory layout qemu-server will start it with, and refuses a VM too wide for\n' +
      'this node with one line on stderr (the VM, its width, the limit, a `qm set` fix). A config it\n' +
      'cannot read or judge refuses too. Other phases exit 0.\n' +
      'With --install: writes the snippet physbits-hook.sh to the storage (`pvesm path`) and sets it on\n' +
      "the VMs (all of this node's without VMIDs) with `qm set VMID --hookscript`; a VM that already had\n" +
      'a hookscript gets physbits-hook-VMID.sh, which runs physbits and then that script.',
    options: [
      CONFIG,
      ['--install', 'write the snippet and set it on the VMs'],
      ['--storage ID', 'the storage with snippets content for --install (default local)'],
    ],
    exit: '0 allowed (and every phase but pre-start), 1 refused, 3 refused: the source width of a migrating host-following VM is unknown, 78 refused: the config cannot be loaded; --install: 0 done, 1 some VM failed, 64 usage',
    example: 'physbitsctl proxmox-hook 100 pre-start',
  },
  {
    name: 'help',
    synopsis: 'help [COMMAND]',
    summary: "this list, or a command's help",
    description: 'Prints the list of commands, or the help of COMMAND (the same as `physbitsctl COMMAND --help`).',
    options: [],
    exit: '0 printed, 64 an unknown command',
    example: 'physbitsctl help scan',
  },
];

export function findCommand(name: string): CommandHelp | undefined {
  return COMMANDS.find((c) => c.name === name);
}

export function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'usage: physbitsctl COMMAND [OPTIONS]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'physbitsctl COMMAND --help (or physbitsctl help COMMAND) explains each; physbitsctl --version.',
    `exit: ${EXIT_STATE}`,
  ].join('\n');
}

export function commandHelp(c: CommandHelp): string {
  const width = Math.max(0, ...c.options.map(([flag]) => flag.length));
  return [
    `usage: physbitsctl ${c.synopsis}`,
    '',
    `${c.summary[0].toUpperCase()}${c.summary.slice(1)}.`,
    c.description,
    ...(c.options.length
      ? [
          '',
          'options:',
          ...c.options.map(([flag, text]) => `  ${flag.padEnd(width)}  ${text}`),
          `  ${'--help'.padEnd(width)}  this help`,
        ]
      : []),
    '',
    `exit: ${c.exit}`,
    '',
    'example:',
    `  ${c.example}`,
  ].join('\n');
}
