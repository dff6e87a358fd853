/**
 * A scripted fake QMP server on a temp UNIX socket, for what real QEMU will not do on demand:
 * bad or missing greetings, hang-ups, stalls, oversized lines, replies with unknown ids or none,
 * and thousands of VMs at once.
 *
 *   const fake = await startFakeQmp({ physBits: 46, name: 'web1' });
 *   const client = await QmpClient.connect(fake.socket);
 *   fake.script['query-status'] = [{ event: 'STOP' }, { error: { class: 'GenericError', desc: 'boom' } }];
 *   fake.emitEvent('RESUME');
 *   await fake.close();
 *
 * By default it answers like QEMU 7.2 for a paused q35 TCG guest, from the data in `fake.vm`
 * (mutable at any time): qmp_capabilities (negotiation enforced, 'oob' offered), query-version,
 * query-name, query-kvm, query-status, query-cpus-fast, query-hotpluggable-cpus, qom-get and
 * qom-list (from the `props` table: QOM path → property → value; parents of listed paths exist as
 * containers), query-sev, query-memory-devices, query-memdev, query-memory-size-summary,
 * query-machines, query-commands, x-query-jit, human-monitor-command 'info jit', cont / stop
 * (with RESUME / STOP events), quit (SHUTDOWN, then it hangs up), getfd; anything else gets
 * CommandNotFound. Like QEMU it serves one client at a time: a second connection is accepted by
 * the kernel but not greeted until the first one leaves (`oneClient: false` greets everyone).
 *
 * `script[command]` overrides a command with a FakeAction or a function returning one:
 *   { return: v }                 reply with the client's id
 *   { error: { class, desc } }    error reply with the client's id
 *   { reply: {...} }              send this object verbatim (unknown ids, no id, anything)
 *   { line: 'text' }              send this text verbatim as one line (garbage, oversized lines)
 *   { event: 'NAME', data? }      emit an event on this connection
 *   { delayMs: n }                wait
 *   { hangup: true }              close the connection without a reply
 *   { stall: true }               never reply (blocks this client's later commands, as a hung QEMU does)
 *   [a, b, ...]                   each in order, e.g. [{ event: 'STOP' }, { return: {} }]
 *   fake.qemu                     the default behaviour
 */
import { EventEmitter } from 'node:events';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { ClosedError } from '../../qmp/errors';
import { jsonText } from '../../qmp/framing';
import type { QmpVersion } from '../../qmp/messages';
import { QmpServerSession, type ServerCommand } from '../../qmp/server';
import { tempDir } from './tmp';

export type PropTable = Record<string, Record<string, unknown>>;

/** The guest the fake pretends to be; every default answer is computed from it. */
export interface FakeVm {
  version: QmpVersion;
  name: string | null;
  status: string;
  kvm: { enabled: boolean; present: boolean };
  /** QOM path → property → value, for qom-get and qom-list. */
  props: PropTable;
  /** QOM paths of the CPUs, in cpu-index order. */
  cpus: string[];
  memoryDevices: unknown[];
  memdev: unknown[];
  memorySizeSummary: { 'base-memory': number; 'plugged-memory': number };
  machines: unknown[];
  /** query-sev's answer; 'unavailable' answers GenericError "SEV feature is not available" (QEMU without SEV support). */
  sev: Record<string, unknown> | 'unavailable';
}

export interface FakeCommand {
  name: string;
  arguments?: Record<string, unknown>;
  hasId: boolean;
  id: unknown;
  oob: boolean;
  /** The line as received. */
  text: string;
  /** Which connection (1, 2, ...) sent it. */
  client: number;
}

export type FakeAction =
  | { return: unknown }
  | { error: { class: string; desc: string } }
  | { reply: Record<string, unknown> }
  | { line: string }
  | { event: string; data?: Record<string, unknown> }
  | { delayMs: number }
  | { hangup: true }
  | { stall: true }
  | FakeAction[];

export type FakeResponder = FakeAction | ((cmd: FakeCommand, fake: FakeQmp) => FakeAction | Promise<FakeAction>);

export interface FakeQmpOptions {
  /** Directory of the socket; a fresh temp dir (removed on close) by default. */
  dir?: string;
  socketName?: string;
  /** 'qemu' (default): QEMU 7.2's greeting; 'none': never greet; 'garbage': a line that is not JSON; an object: sent as the greeting. */
  greeting?: 'qemu' | 'none' | 'garbage' | Record<string, unknown>;
  /** Capabilities offered in the greeting. Default ['oob'], as QEMU on a socket. */
  capabilities?: string[];
  /** Shortcut for the first CPU's phys-bits (default 40, TCG's default). */
  physBits?: number;
  /** Merged over the default table, path by path. */
  props?: PropTable;
  vm?: Partial<Omit<FakeVm, 'props'>>;
  script?: Record<string, FakeResponder>;
  /** Serve one client at a time, as QEMU does. Default true. */
  oneClient?: boolean;
}

export const QEMU_72_VERSION: QmpVersion = {
  qemu: { major: 7, minor: 2, micro: 22 },
  package: 'Debian 1:7.2+dfsg-7+deb12u18+b3',
};
export const FIRST_CPU = '/machine/unattached/device[0]';

/** What QEMU 7.2 reports for `-machine q35,accel=tcg -cpu qemu64 -m 64M` (measured). */
export function defaultProps(): PropTable {
  return {
    '/machine': {
      type: 'pc-q35-7.2-machine',
      'max-ram-below-4g': 4294967296,
      'device-memory-region-size': 0,
      'confidential-guest-support': '',
    },
    '/machine/q35': {
      type: 'q35-pcihost',
      'pci-hole64-start': 4294967296,
      'pci-hole64-end': 38654705664,
      'pci-hole64-size': 34359738368,
      'below-4g-mem-size': 67108864,
      'above-4g-mem-size': 0,
    },
    [FIRST_CPU]: {
      type: 'qemu64-x86_64-cpu',
      'phys-bits': 40,
      'host-phys-bits': false,
      'host-phys-bits-limit': 0,
      vendor: 'AuthenticAMD',
      'model-id': 'QEMU Virtual CPU version 2.5+',
    },
  };
}

export function defaultVm(): FakeVm {
  return {
    version: QEMU_72_VERSION,
    name: null,
    status: 'prelaunch',
    kvm: { enabled: false, present: true },
    props: defaultProps(),
    cpus: [FIRST_CPU],
    memoryDevices: [],
    memdev: [
      {
        share: false,
        reserve: true,
        prealloc: false,
        'host-nodes': [],
        size: 67108864,
        merge: true,
        dump: true,
        policy: 'default',
        id: 'pc.ram',
      },
    ],
    memorySizeSummary: { 'base-memory': 67108864, 'plugged-memory': 0 },
    machines: [
      {
        'hotpluggable-cpus': true,
        name: 'pc-q35-7.2',
        'numa-mem-supported': false,
        'default-cpu-type': 'qemu64-x86_64-cpu',
        'cpu-max': 288,
        deprecated: false,
        'default-ram-id': 'pc.ram',
        alias: 'q35',
      },
      {
        'hotpluggable-cpus': true,
        name: 'pc-i440fx-7.2',
        'numa-mem-supported': false,
        'default-cpu-type': 'qemu64-x86_64-cpu',
        'cpu-max': 255,
        deprecated: false,
        'default-ram-id': 'pc.ram',
        'is-default': true,
        alias: 'pc',
      },
    ],
    sev: { enabled: false, 'api-minor': 0, handle: 0, state: 'uninit', 'api-major': 0, 'build-id': 0, policy: 0 },
  };
}

const err = (cls: string, desc: string): FakeAction => ({ error: { class: cls, desc } });

function qomType(v: unknown, name: string): string {
  if (name === 'type') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'number';
  if (typeof v === 'string') return 'string';
  return 'any';
}

/** The path exists when it is in the table or is the parent of a path in it. */
function qomExists(props: PropTable, path: string): boolean {
  return path in props || Object.keys(props).some((p) => p.startsWith(path + '/'));
}

function qomGet(vm: FakeVm, args: Record<string, unknown>): FakeAction {
  if (typeof args.path !== 'string') return err('GenericError', "Parameter 'path' is missing");
  if (typeof args.property !== 'string') return err('GenericError', "Parameter 'property' is missing");
  if (!qomExists(vm.props, args.path)) return err('DeviceNotFound', `Device '${args.path}' not found`);
  const obj = vm.props[args.path] ?? {};
  const type = (obj.type as string | undefined) ?? 'container';
  if (args.property === 'type') return { return: type };
  if (!(args.property in obj)) return err('GenericError', `Property '${type}.${args.property}' not found`);
  return { return: obj[args.property] };
}

function qomList(vm: FakeVm, args: Record<string, unknown>): FakeAction {
  if (typeof args.path !== 'string') return err('GenericError', "Parameter 'path' is missing");
  if (!qomExists(vm.props, args.path)) return err('DeviceNotFound', `Device '${args.path}' not found`);
  const obj = vm.props[args.path] ?? {};
  const out: Array<{ name: string; type: string }> = [{ name: 'type', type: 'string' }];
  for (const [k, v] of Object.entries(obj)) if (k !== 'type') out.push({ name: k, type: qomType(v, k) });
  const seen = new Set<string>();
  for (const p of Object.keys(vm.props)) {
    if (!p.startsWith(args.path + '/')) continue;
    const child = p.slice(args.path.length + 1).split('/')[0];
    if (seen.has(child)) continue;
    seen.add(child);
    const childType = (vm.props[`${args.path}/${child}`]?.type as string | undefined) ?? 'container';
    out.push({ name: child, type: `child<${childType}>` });
  }
  return { return: out };
}

const JIT_TEXT = 'Translation buffer state:\ngen code size       0/1073736704\nTB count            0\n';

/** QEMU 7.2's answers, computed from `fake.vm`. */
export function qemuBehaviour(cmd: FakeCommand, fake: FakeQmp): FakeAction {
  const vm = fake.vm;
  const args = cmd.arguments ?? {};
  switch (cmd.name) {
    case 'query-version':
      return { return: vm.version };
    case 'query-name':
      return { return: vm.name === null ? {} : { name: vm.name } };
    case 'query-kvm':
      return { return: vm.kvm };
    case 'query-status':
      return { return: { status: vm.status, singlestep: false, running: vm.status === 'running' } };
    case 'query-cpus-fast':
      return {
        return: vm.cpus.map((path, i) => ({
          'thread-id': 10000 + i,
          props: { 'core-id': 0, 'thread-id': 0, 'socket-id': i },
          'qom-path': path,
          'cpu-index': i,
          target: 'x86_64',
        })),
      };
    case 'query-hotpluggable-cpus':
      return {
        return: vm.cpus.map((path, i) => ({
          props: { 'core-id': 0, 'thread-id': 0, 'socket-id': i },
          'vcpus-count': 1,
          'qom-path': path,
          type: vm.props[path]?.type ?? 'qemu64-x86_64-cpu',
        })),
      };
    case 'qom-get':
      return qomGet(vm, args);
    case 'qom-list':
      return qomList(vm, args);
    case 'query-sev':
      return vm.sev === 'unavailable' ? err('GenericError', 'SEV feature is not available') : { return: vm.sev };
    case 'query-memory-devices':
      return { return: vm.memoryDevices };
    case 'query-memdev':
      return { return: vm.memdev };
    case 'query-memory-size-summary':
      return { return: vm.memorySizeSummary };
    case 'query-machines':
      return { return: vm.machines };
    case 'query-commands':
      return { return: [...new Set([...DEFAULT_COMMANDS, ...Object.keys(fake.script)])].map((name) => ({ name })) };
    case 'x-query-jit':
      return vm.kvm.enabled
        ? err('GenericError', 'JIT information is only available with accel=tcg')
        : { return: { 'human-readable-text': JIT_TEXT } };
    case 'human-monitor-command':
      return { return: args['command-line'] === 'info jit' && !vm.kvm.enabled ? JIT_TEXT : '' };
    case 'cont':
      if (vm.status === 'running') return { return: {} };
      vm.status = 'running';
      return [{ event: 'RESUME' }, { return: {} }];
    case 'stop':
      if (vm.status !== 'running') return { return: {} };
      vm.status = 'paused';
      return [{ event: 'STOP' }, { return: {} }];
    case 'quit':
      return [{ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } }, { return: {} }, { hangup: true }];
    case 'getfd':
      return err('GenericError', 'No file descriptor supplied via SCM_RIGHTS');
    default:
      return err('CommandNotFound', `The command ${cmd.name} has not been found`);
  }
}

/** The commands the fake answers like QEMU (its `query-commands` list, with any scripted ones). */
export const DEFAULT_COMMANDS: readonly string[] = [
  'qmp_capabilities',
  'query-version',
  'query-name',
  'query-kvm',
  'query-status',
  'query-cpus-fast',
  'query-hotpluggable-cpus',
  'qom-get',
  'qom-list',
  'query-sev',
  'query-memory-devices',
  'query-memdev',
  'query-memory-size-summary',
  'query-machines',
  'query-commands',
  'x-query-jit',
  'human-monitor-command',
  'cont',
  'stop',
  'quit',
  'getfd',
];

const MAX_LOGGED_COMMANDS = 1000;

export class FakeQmp extends EventEmitter {
  readonly socket: string;
  readonly dir: string;
  readonly vm: FakeVm;
  /** Overrides by command name; change it at any time. */
  readonly script: Record<string, FakeResponder>;
  /** The last 1000 commands received (qmp_capabilities is answered before it reaches here). */
  readonly commands: FakeCommand[] = [];
  /** The default behaviour, for responders that want to fall back to it. */
  readonly qemu = qemuBehaviour;
  /** Connections accepted so far. */
  connections = 0;
  private readonly server: net.Server;
  private readonly sessions = new Set<QmpServerSession>();
  private readonly waiting: Array<{ socket: net.Socket; client: number }> = [];
  private readonly ownDir: boolean;
  private readonly opts: FakeQmpOptions;
  private closing: Promise<void> | null = null;

  constructor(opts: FakeQmpOptions) {
    super();
    this.opts = opts;
    this.ownDir = !opts.dir;
    this.dir = opts.dir ?? tempDir('physbits-fakeqmp-');
    this.socket = join(this.dir, opts.socketName ?? 'fake.qmp');
    const vm = { ...defaultVm(), ...opts.vm } as FakeVm;
    vm.props = defaultProps();
    for (const [path, values] of Object.entries(opts.props ?? {})) vm.props[path] = { ...vm.props[path], ...values };
    if (opts.physBits !== undefined) vm.props[vm.cpus[0]] = { ...vm.props[vm.cpus[0]], 'phys-bits': opts.physBits };
    this.vm = vm;
    this.script = { ...opts.script };
    this.server = net.createServer((socket) => this.onConnection(socket));
  }

  /** Clients being served now. */
  get clients(): number {
    return this.sessions.size;
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socket, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** Emits an event to every negotiated client. */
  emitEvent(event: string, data?: Record<string, unknown>): void {
    for (const s of this.sessions) s.sendEvent(jsonText(eventMessage(event, data)));
  }

  /** Sends a raw line to every client being served, negotiated or not. */
  sendLine(text: string): void {
    for (const s of this.sessions) s.sendLine(text);
  }

  /** Drops every connection now (served or waiting), like a QEMU that exits. */
  hangup(): void {
    for (const s of this.sessions) void s.close(new ClosedError('fake QMP hung up'));
    for (const w of this.waiting.splice(0)) w.socket.destroy();
  }

  /** Resolves with the next command of that name. */
  waitForCommand(name: string, timeoutMs = 10000): Promise<FakeCommand> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('command', on);
        reject(new Error(`fake QMP: no ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (cmd: FakeCommand): void => {
        if (cmd.name !== name) return;
        clearTimeout(timer);
        this.off('command', on);
        resolve(cmd);
      };
      this.on('command', on);
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((r) => this.server.close(() => r()));
      this.hangup();
      await closed;
      if (this.ownDir) rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.closing;
  }

  private onConnection(socket: net.Socket): void {
    socket.on('error', () => undefined);
    this.connections++;
    const client = this.connections;
    if ((this.opts.oneClient ?? true) && this.sessions.size > 0) {
      // QEMU does not accept() while a client holds the monitor; the kernel's backlog holds the caller.
      socket.pause();
      const entry = { socket, client };
      this.waiting.push(entry);
      socket.once('close', () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
      });
      return;
    }
    this.serve(socket, client);
  }

  private serve(socket: net.Socket, client: number): void {
    const greeting = this.opts.greeting ?? 'qemu';
    const session = new QmpServerSession(socket, {
      version: this.vm.version,
      capabilities: this.opts.capabilities ?? ['oob'],
      greeting: greeting === 'qemu',
      maxLineBytes: 64 * 1024 * 1024,
      maxQueueBytes: 256 * 1024 * 1024,
      label: `fake QMP client #${client}`,
      handler: async (cmd) => {
        await this.respond(cmd, client, session);
        return { noReply: true };
      },
    });
    this.sessions.add(session);
    if (greeting === 'garbage') session.sendLine('this is not QMP');
    else if (typeof greeting === 'object') session.sendLine(jsonText(greeting));
    session.on('close', () => {
      this.sessions.delete(session);
      if (this.sessions.size > 0 || this.closing) return;
      const next = this.waiting.shift();
      if (next) {
        next.socket.resume();
        this.serve(next.socket, next.client);
      }
    });
  }

  private async respond(sc: ServerCommand, client: number, session: QmpServerSession): Promise<void> {
    const cmd: FakeCommand = {
      name: sc.name,
      arguments: sc.arguments,
      hasId: sc.hasId,
      id: sc.id,
      oob: sc.oob,
      text: sc.text,
      client,
    };
    this.commands.push(cmd);
    if (this.commands.length > MAX_LOGGED_COMMANDS) this.commands.shift();
    this.emit('command', cmd);
    const responder = this.script[cmd.name];
    let action: FakeAction;
    if (responder === undefined) action = qemuBehaviour(cmd, this);
    else action = typeof responder === 'function' ? await responder(cmd, this) : responder;
    await perform(action, sc.idText, session);
  }
}

function eventMessage(event: string, data?: Record<string, unknown>): Record<string, unknown> {
  const now = Date.now();
  const msg: Record<string, unknown> = {
    timestamp: { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 },
    event,
  };
  if (data !== undefined) msg.data = data;
  return msg;
}

async function perform(action: FakeAction, idText: string | undefined, session: QmpServerSession): Promise<void> {
  if (Array.isArray(action)) {
    for (const a of action) await perform(a, idText, session);
    return;
  }
  const withId = (body: string): string => (idText === undefined ? `{${body}}` : `{${body}, "id": ${idText}}`);
  if ('return' in action) session.sendLine(withId(`"return": ${jsonText(action.return)}`));
  else if ('error' in action) session.sendLine(withId(`"error": ${jsonText(action.error)}`));
  else if ('reply' in action) session.sendLine(jsonText(action.reply));
  else if ('line' in action) session.sendLine(action.line);
  else if ('event' in action) session.sendLine(jsonText(eventMessage(action.event, action.data)));
  else if ('delayMs' in action) await new Promise((r) => setTimeout(r, action.delayMs));
  else if ('hangup' in action) await session.close(new ClosedError('fake QMP hung up'));
  else if ('stall' in action) await new Promise<void>((r) => (session.open ? session.once('close', () => r()) : r()));
}

/** Starts a fake QMP server; see the file comment for the script language. */
export async function startFakeQmp(opts: FakeQmpOptions = {}): Promise<FakeQmp> {
  const fake = new FakeQmp(opts);
  await fake.listen();
  return fake;
}
