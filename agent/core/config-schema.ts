/**
 * The configuration's schema: every key, its default and its bound, in zod, and the messages its
 * problems are told with. Loaded only when a config has a problem (or by the build, which compiles
 * it into the check every start runs: config-spec.ts); agent/core/config.ts is the way in.
 */
import { z } from 'zod';
import { absentAsUndefined, asList, crossKeyProblems, isHostPort, type CrossKeyView } from './config-rules';

/** The rules between keys (config-rules.ts) as one zod check on the whole config. */
const crossKeyCheck = z.superRefine((cfg: CrossKeyView, ctx) => {
  for (const problem of crossKeyProblems(cfg)) ctx.addIssue({ code: 'custom', ...problem });
});

const hostPort = z.string().refine(isHostPort, 'expected host:port');
const bits = z.number().int().min(1).max(64);
const cronExpr = z.string().min(1);
/** A key that may be left out or set to null: either reads as undefined. */
const optional = <T extends z.ZodType>(schema: T) => schema.nullish().transform(absentAsUndefined);
/** An optional non-empty string (a name, a path, a group). */
const optionalText = optional(z.string().min(1));

const discoveryPattern = z.union([
  z.string().min(1),
  z.object({ glob: z.string().min(1), mode: z.enum(['hold', 'poll']) }).strict(),
]);

const staticPeer = z.object({ name: z.string().min(1), address: z.string().min(1), physBits: bits }).strict();
const livePeer = z
  .object({
    name: z.string().min(1),
    address: z.string().min(1),
    url: z
      .string()
      .url()
      .regex(/^https?:\/\//, 'expected an http:// or https:// URL'),
    tokenFile: z.string().min(1),
    /** PEM certificates that verify an https peer (else tls.caFile, else the system's roots). */
    caFile: z.string().min(1).optional(),
    /** The width when the live agent cannot be reached, and a ceiling on what it says (optional). */
    physBits: bits.optional(),
  })
  .strict();

export const configSchema = z
  .object({
    host: z
      .object({
        physBits: optional(bits),
        name: optionalText,
        procRoot: z.string().default('/proc'),
        sysRoot: z.string().default('/sys'),
        devRoot: z.string().default('/dev'),
      })
      .strict()
      .prefault({}),
    discovery: z
      .object({
        sockets: z.array(discoveryPattern).default([]),
        /** Mode for plain string patterns. */
        defaultMode: z.enum(['hold', 'poll']).default('hold'),
        schedule: cronExpr.default('*/1 * * * *'),
        pollIntervalSeconds: z.number().min(1).max(86400).default(30),
        libvirt: optionalText,
        libvirtPollSeconds: z.number().min(1).max(86400).default(30),
        virsh: z.string().default('virsh'),
      })
      .strict()
      .prefault({}),
    qmp: z
      .object({
        timeoutMs: z.number().int().min(50).max(600000).default(5000),
        maxLineBytes: z
          .number()
          .int()
          .min(1024)
          .max(64 * 1024 * 1024)
          .default(1024 * 1024),
        maxPending: z.number().int().min(1).max(10000).default(64),
        concurrency: z.number().int().min(1).max(1024).default(32),
        /** Held VMs are asked query-status this often, so a hung QEMU shows as unknown quickly… */
        heartbeatMs: z.number().int().min(100).max(600000).default(1000),
        /** …but no more than this many heartbeats a second over all VMs (each VM's interval grows). */
        heartbeatsPerSecond: z.number().min(1).max(100000).default(200),
        heartbeatTimeoutMs: z.number().int().min(100).max(600000).default(3000),
      })
      .strict()
      .prefault({}),
    verify: z
      .object({ schedule: cronExpr.default('*/5 * * * *') })
      .strict()
      .prefault({}),
    guard: z
      .object({
        enabled: z.boolean().default(true),
        socketDir: z.string().default('/run/physbits/guard'),
        socketGroup: optionalText,
        unknownPeer: z.enum(['refuse', 'allow']).default('refuse'),
        onUnknown: z.enum(['refuse', 'allow']).default('refuse'),
        holdMs: z.number().int().min(0).max(60000).default(3000),
        cancelUnsafe: z.boolean().default(false),
        maxClients: z.number().int().min(1).max(4096).default(64),
        clientQueueBytes: z
          .number()
          .int()
          .min(4096)
          .max(256 * 1024 * 1024)
          .default(4 * 1024 * 1024),
        peerCacheSeconds: z.number().min(0).max(3600).default(30),
        /** How long a live peer (or fleet.prometheus) that did not answer is remembered so; at most the answer's own cache time. */
        peerFailureCacheSeconds: z.number().min(0).max(3600).default(2),
      })
      .strict()
      .prefault({}),
    api: z
      .object({
        socket: z.string().default('/run/physbits/api.sock'),
        group: optionalText,
        mode: z
          .string()
          .regex(/^0?[0-7]{3}$/)
          .default('0660'),
        listen: optional(hostPort),
        tokenFile: optionalText,
        maxEventClients: z.number().int().min(1).max(10000).default(64),
        eventBufferBytes: z
          .number()
          .int()
          .min(1024)
          .max(64 * 1024 * 1024)
          .default(1024 * 1024),
        maxBodyBytes: z
          .number()
          .int()
          .min(1024)
          .max(16 * 1024 * 1024)
          .default(64 * 1024),
        /** A connection without a complete request (idle, slow headers, slow body) is closed after this. */
        idleTimeoutMs: z.number().int().min(500).max(600000).default(10000),
        /** Open connections to api.listen in all; past it a new one is closed on arrival. */
        maxConnections: z.number().int().min(1).max(65536).default(256),
        /** Open connections to api.listen from one source: an IPv4 address, an IPv6 /64. */
        maxConnectionsPerAddress: z.number().int().min(1).max(65536).default(16),
        /** A connection must complete its first request's headers within this. */
        firstRequestMs: z.number().int().min(100).max(600000).default(2000),
        /** Event-stream clients on api.listen (TCP); the local socket has maxEventClients of its own. */
        maxPeerEventClients: z.number().int().min(1).max(10000).default(16),
        /** Event-stream clients are pinged this often; one that has not answered by the next ping is cut off. */
        eventPingMs: z.number().int().min(100).max(600000).default(30000),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        listen: hostPort.default('127.0.0.1:9741'),
        /** Open connections to metrics.listen in all. */
        maxConnections: z.number().int().min(1).max(65536).default(64),
        /** Open connections to metrics.listen from one source: an IPv4 address, an IPv6 /64. */
        maxConnectionsPerAddress: z.number().int().min(1).max(65536).default(16),
      })
      .strict()
      .prefault({}),
    peers: z.array(z.union([livePeer, staticPeer])).default([]),
    tls: z
      .object({
        /** PEM certificates that verify https peers without a caFile of their own. */
        caFile: optionalText,
      })
      .strict()
      .prefault({}),
    fleet: z
      .object({
        /** Base URL of a Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics). */
        prometheus: optional(
          z
            .string()
            .url()
            .regex(/^https?:\/\//, 'expected an http:// or https:// URL'),
        ),
        /** A file holding a bearer token for the query API (one line). */
        tokenFile: optionalText,
        /** Sent as X-Scope-OrgID (Mimir, Cortex, Loki-style multi-tenancy). */
        tenant: optional(z.string().min(1).max(256)),
        /** This host's pool: the `pool` label of physbits_host_info and the series a fleet query joins. */
        pool: optional(
          z
            .string()
            .min(1)
            .max(128)
            .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'),
        ),
        timeoutMs: z.number().int().min(100).max(120000).default(5000),
        maxResponseBytes: z
          .number()
          .int()
          .min(64 * 1024)
          .max(1024 * 1024 * 1024)
          .default(64 * 1024 * 1024),
        cacheSeconds: z.number().min(0).max(3600).default(5),
        /** A host seen within this window but not up now is listed as unreachable. */
        lookbackSeconds: z
          .number()
          .int()
          .min(60)
          .max(30 * 86400)
          .default(3600),
        /** A host whose newest width sample is older than this is stale: unknown. */
        staleSeconds: z.number().int().min(5).max(86400).default(300),
        /** The scrape job(s) whose physbits series count; series of any other job are ignored (docs/fleet-prometheus.md). */
        job: z
          .union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).min(1).max(64)])
          .default('physbits')
          .transform(asList),
        /** Series accepted in the answers of one ask, all queries together; past it the ask fails (PROM_TOO_MANY_SERIES). */
        maxSeries: z.number().int().min(1000).max(10_000_000).default(200_000),
        /** Hosts accepted in one ask; past it the ask fails (PROM_TOO_MANY_HOSTS). */
        maxHosts: z.number().int().min(1).max(1_000_000).default(10_000),
        /** Above this many cells (hosts × guests) the fleet document gives its matrix by host width only. */
        maxMatrixCells: z.number().int().min(0).max(100_000_000).default(200_000),
      })
      .strict()
      .prefault({}),
    schedulers: z
      .object({
        /** A Kubernetes Node Feature Discovery local feature file kept current with this host's limit. */
        nfdFeatureFile: optionalText,
      })
      .strict()
      .prefault({}),
    policy: z
      .object({
        accelerators: z.array(z.string().min(1)).default(['kvm']),
        narrowerSeverity: z.enum(['ok', 'info']).default('ok'),
      })
      .strict()
      .prefault({}),
    alerts: z
      .object({
        alertmanagers: z.array(z.string().url()).default([]),
        webhooks: z
          .array(
            z
              .object({
                url: z.string().url(),
                secret: z.string().min(1).optional(),
                /** A root-owned file (mode 0600 or narrower) holding the secret; read by the daemon. */
                secretFile: z.string().min(1).optional(),
              })
              .strict(),
          )
          .default([]),
        spoolDir: z.string().default('/var/lib/physbits/spool'),
        spoolMaxEntries: z.number().int().min(1).max(1000000).default(10000),
        refusalHoldMinutes: z.number().min(0).max(10080).default(15),
        resendSeconds: z.number().min(1).max(86400).default(60),
        timeoutMs: z.number().int().min(100).max(120000).default(5000),
        retryMaxSeconds: z.number().min(1).max(86400).default(300),
        generatorURL: optional(z.string()),
      })
      .strict()
      .prefault({}),
    libvirtHook: z
      .object({
        /** Refuse when physbits itself cannot decide (XML it cannot judge, no host width). Default: refuse. */
        failClosed: z.boolean().default(true),
        notifyTimeoutMs: z.number().int().min(10).max(10000).default(500),
      })
      .strict()
      .prefault({}),
    proxmox: z
      .object({
        /** The Proxmox cluster file system's root, read by `physbitsctl proxmox-hook`. */
        configDir: z.string().min(1).default('/etc/pve'),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
        format: z.enum(['auto', 'journal', 'text', 'json']).default('auto'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .check(crossKeyCheck);

export type Config = z.infer<typeof configSchema>;

/**
 * The schema's code by name, for its compiled form (contrib/package/config-spec.ts): the functions
 * and checks that are not bounds, as config-spec.ts calls them.
 */
export const SCHEMA_CODE: ReadonlyMap<unknown, string> = new Map<unknown, string>([
  [isHostPort, 'isHostPort'],
  [absentAsUndefined, 'absentAsUndefined'],
  [asList, 'asList'],
  [crossKeyCheck, 'crossKeyProblems'],
]);

/** "a.b[2].c" from a zod issue path. */
function keyName(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  }
  return out || '(top level)';
}

type Issue = z.core.$ZodIssue;

/** A branch whose value has the wrong type altogether (a string where an object was wanted). */
const wrongShape = (issues: Issue[]) => issues.some((i) => i.code === 'invalid_type' && i.path.length === 0);

/**
 * The issue to show for a union (a peer is static or live; a pattern a string or an object): the
 * branch the value was meant for — of the right shape, with the fewest problems — so a peer without
 * `address` says `peers[1].address: required`, not `peers[1]: Invalid input`.
 */
function explain(issue: Issue): { path: PropertyKey[]; what: string } {
  if (issue.code === 'invalid_union' && issue.errors.length) {
    if (issue.errors.every(wrongShape)) {
      const expected = issue.errors.flatMap((b) => b.map((i) => (i.code === 'invalid_type' ? i.expected : '')));
      return { path: [...issue.path], what: `expected ${[...new Set(expected.filter(Boolean))].join(' or ')}` };
    }
    const branch = [...issue.errors].filter((b) => !wrongShape(b)).sort((a, b) => a.length - b.length)[0];
    const inner = explain(branch[0]);
    return { path: [...issue.path, ...inner.path], what: inner.what };
  }
  if (issue.code === 'unrecognized_keys' && issue.keys.length)
    return { path: [...issue.path, issue.keys[0]], what: 'unknown key' };
  if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message))
    return { path: [...issue.path], what: 'required' };
  return { path: [...issue.path], what: issue.message };
}

/** The value as the schema reads it, or every problem of it, one `key: what` line each. */
export function schemaParse(value: unknown): { config: Config; problems?: undefined } | { problems: string[] } {
  const result = configSchema.safeParse(value);
  if (result.success) return { config: result.data };
  return {
    problems: result.error.issues.map((issue) => {
      const { path, what } = explain(issue);
      return `${keyName(path)}: ${what}`;
    }),
  };
}
