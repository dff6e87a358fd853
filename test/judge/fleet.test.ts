import test from 'ava';
import { buildFleet, fleetExitCode, type FleetInput } from '../../agent/judge/fleet';
import { MAX_GUEST_ROWS, renderFleet } from '../../agent/cli/render-fleet';
import type { PeerFacts, VmStatus } from '../../agent/core/types';
import { GIB, status, vm } from '../helpers/fleet-docs';

const policy = { accelerators: ['kvm'] };

function input(peers: PeerFacts[], localVms: VmStatus[] = [vm('web1', 46)]): FleetInput {
  return { local: status('hv1', 46, localVms), localName: 'hv1', peers, policy };
}

test('a 46-bit guest fits its 46-bit host, not a 39-bit live peer nor a 44-bit static one', (t) => {
  const doc = buildFleet(
    input([
      { name: 'hv2', physBits: 39, reachable: true, status: status('hv2-real-hostname', 39, [vm('db1', 39)]) },
      { name: 'hv3', physBits: 44, reachable: true },
    ]),
  );
  t.deepEqual(doc.hosts, [
    { name: 'hv1', physBits: 46, reachable: true, source: 'local' },
    { name: 'hv2', physBits: 39, reachable: true, source: 'live' },
    { name: 'hv3', physBits: 44, reachable: true, source: 'static' },
  ]);
  t.deepEqual(
    doc.guests.map((g) => [g.host, g.vm, g.physBits, g.fits, g.state]),
    [
      ['hv1', 'web1', 46, { hv1: true, hv2: false, hv3: false }, 'critical'],
      ['hv2', 'db1', 39, { hv1: true, hv2: true, hv3: true }, 'ok'],
    ],
  );
  t.is(doc.guests[0].why!.hv2, 'guest 46 bits > host 39 bits');
  t.is(doc.guests[0].why!.hv1, 'guest 46 bits <= host 46 bits, layout ends at 36 GiB');
  t.deepEqual(doc.summary, { worst: 'critical', exitCode: 2 });
  t.is(fleetExitCode(doc), 2);
});

test('a guest whose layout ends above a host limit does not fit there even when its width does', (t) => {
  const doc = buildFleet(
    input([{ name: 'hv2', physBits: 39, reachable: true }], [vm('big', 39, { highest: 539 * GIB })]),
  );
  t.deepEqual(doc.guests[0].fits!, { hv1: true, hv2: false });
  t.is(doc.guests[0].why!.hv2, 'layout ends at 539 GiB > 2^39 (512 GiB)');
  t.is(doc.guests[0].highestAddress, 539 * GIB);
});

test('both reasons are given when width and layout both fail', (t) => {
  const doc = buildFleet(
    input([{ name: 'hv2', physBits: 39, reachable: true }], [vm('wide', 46, { highest: 600 * GIB })]),
  );
  t.is(doc.guests[0].why!.hv2, 'guest 46 bits > host 39 bits; layout ends at 600 GiB > 2^39 (512 GiB)');
});

test('a guest whose layout was not read is judged on its width alone', (t) => {
  const doc = buildFleet(
    input([{ name: 'hv2', physBits: 46, reachable: true }], [vm('nolayout', 40, { highest: null })]),
  );
  t.deepEqual(doc.guests[0].fits!, { hv1: true, hv2: true });
  t.is(doc.guests[0].why!.hv2, 'guest 40 bits <= host 46 bits, layout not read');
  t.is(doc.guests[0].highestAddress, null);
});

test('an unreachable live peer is reported, not fatal: its configured width is still used, exit 3', (t) => {
  const doc = buildFleet(
    input([
      { name: 'hv2', physBits: 46, reachable: true },
      {
        name: 'hv3',
        physBits: 46,
        reachable: false,
        error: { code: 'PEER_UNREACHABLE', message: 'http://10.0.0.3:9740/v1/status: ECONNREFUSED' },
      },
    ]),
  );
  t.deepEqual(doc.hosts[2], {
    name: 'hv3',
    physBits: 46,
    reachable: false,
    source: 'static',
    error: 'PEER_UNREACHABLE: http://10.0.0.3:9740/v1/status: ECONNREFUSED',
  });
  t.deepEqual(doc.guests[0].fits!, { hv1: true, hv2: true, hv3: true });
  t.is(
    doc.guests[0].why!.hv3,
    'guest 46 bits <= host 46 bits, layout ends at 36 GiB (configured width; host unreachable)',
  );
  t.is(doc.guests[0].state, 'unknown');
  t.is(fleetExitCode(doc), 3);
  t.deepEqual(doc.summary, { worst: 'unknown', exitCode: 3 });
});

test('an unreachable peer with no configured width gives fits null; a misfit elsewhere still makes it critical', (t) => {
  const doc = buildFleet(
    input([
      { name: 'hv2', physBits: 39, reachable: true },
      { name: 'hv4', physBits: null, reachable: false, error: { code: 'PEER_TIMEOUT', message: 'x' } },
    ]),
  );
  t.is(doc.hosts[2].physBits, null);
  t.deepEqual(doc.guests[0].fits!, { hv1: true, hv2: false, hv4: null });
  t.is(doc.guests[0].why!.hv4, 'width of hv4 unknown (unreachable)');
  t.is(doc.guests[0].state, 'critical');
  t.is(fleetExitCode(doc), 2);
});

test('a guest that does not fit an unreachable host only is unknown, not critical', (t) => {
  const doc = buildFleet(input([{ name: 'hv3', physBits: 39, reachable: false }]));
  t.deepEqual(doc.guests[0].fits!, { hv1: true, hv3: false });
  t.is(doc.guests[0].state, 'unknown');
  t.is(fleetExitCode(doc), 3);
});

test('the guests of an unreachable peer are absent; a peer status is ignored when marked unreachable', (t) => {
  const doc = buildFleet(
    input([{ name: 'hv2', physBits: 39, reachable: false, status: status('hv2', 39, [vm('db1', 39)]) }]),
  );
  t.deepEqual(
    doc.guests.map((g) => `${g.host}/${g.vm}`),
    ['hv1/web1'],
  );
  t.is(doc.hosts[1].source, 'static');
});

test('a VM the agent could not read is listed with physBits null and fits {}, state unknown', (t) => {
  const broken: VmStatus = {
    socket: '/run/qemu/dead.qmp',
    name: 'dead',
    error: { code: 'QMP_CONNECT_FAILED', message: 'ECONNREFUSED' },
  };
  const doc = buildFleet(input([{ name: 'hv2', physBits: 46, reachable: true }], [vm('web1', 46), broken]));
  t.deepEqual(doc.guests[1], {
    host: 'hv1',
    vm: 'dead',
    physBits: null,
    accelerator: null,
    bound: null,
    highestAddress: null,
    fits: {},
    why: {},
    fitsByWidth: {},
    whyByWidth: {},
    fitCount: { fits: 0, doesNot: 0, unknown: 2 },
    state: 'unknown',
    error: { code: 'QMP_CONNECT_FAILED', message: 'ECONNREFUSED' },
  });
  t.is(fleetExitCode(doc), 3);
});

test('a TCG guest is not bound by host widths unless policy.accelerators names tcg', (t) => {
  const peers = [{ name: 'hv2', physBits: 39, reachable: true }];
  const free = buildFleet({ ...input(peers, [vm('lab', 46, { accel: 'tcg' })]) });
  t.deepEqual(free.guests[0].fits, { hv1: true, hv2: true });
  t.is(free.guests[0].bound, false);
  t.is(free.guests[0].why!.hv2, 'tcg guest: host widths do not bind it (policy.accelerators)');
  t.is(fleetExitCode(free), 0);
  const bound = buildFleet({
    ...input(peers, [vm('lab', 46, { accel: 'tcg' })]),
    policy: { accelerators: ['kvm', 'tcg'] },
  });
  t.deepEqual(bound.guests[0].fits, { hv1: true, hv2: false });
  t.is(fleetExitCode(bound), 2);
});

test('every guest carries its fit by host width and the count of hosts; the by-width answers equal the cells', (t) => {
  const doc = buildFleet(
    input(
      [
        { name: 'hv2', physBits: 39, reachable: true },
        { name: 'hv3', physBits: 46, reachable: true },
        { name: 'hv4', physBits: null, reachable: false, error: { code: 'PEER_TIMEOUT', message: 'x' } },
      ],
      [vm('web1', 46), vm('big', 39, { highest: 539 * GIB })],
    ),
  );
  t.is(doc.matrix, 'full');
  t.deepEqual(doc.widths, { '46': 2, '39': 1, unknown: 1 });
  t.deepEqual(doc.guests[0].fitsByWidth, { '46': true, '39': false, unknown: null });
  t.deepEqual(doc.guests[0].whyByWidth, {
    '46': 'guest 46 bits <= host 46 bits, layout ends at 36 GiB',
    '39': 'guest 46 bits > host 39 bits',
    unknown: 'host width unknown',
  });
  t.deepEqual(doc.guests[0].fitCount, { fits: 2, doesNot: 1, unknown: 1 });
  t.deepEqual(doc.guests[1].fitsByWidth, { '46': true, '39': false, unknown: null });
  for (const g of doc.guests)
    for (const h of doc.hosts) {
      t.is(
        g.fits![h.name],
        g.fitsByWidth[h.physBits === null ? 'unknown' : String(h.physBits)],
        `${g.vm} on ${h.name}`,
      );
    }
});

test('above fleet.maxMatrixCells the matrix is given by width only: no fits or why, the same states and exit code', (t) => {
  const peers: PeerFacts[] = [
    { name: 'hv2', physBits: 39, reachable: true },
    { name: 'hv3', physBits: 44, reachable: false, error: { code: 'PEER_TIMEOUT', message: 'x' } },
  ];
  const vms = [vm('web1', 46), vm('db1', 39)];
  const full = buildFleet({ ...input(peers, vms), maxMatrixCells: 6 });
  const byWidth = buildFleet({ ...input(peers, vms), maxMatrixCells: 5 });
  t.is(full.matrix, 'full');
  t.is(byWidth.matrix, 'by-width');
  for (const [i, g] of byWidth.guests.entries()) {
    t.false('fits' in g);
    t.false('why' in g);
    const { fits: _fits, why: _why, ...rest } = full.guests[i];
    t.deepEqual(g, rest);
  }
  // The unreachable 46-bit host's answer is given for its width, without the note on where the width came from.
  t.is(byWidth.guests[0].whyByWidth['44'], 'guest 46 bits > host 44 bits');
  t.is(full.guests[0].why!.hv3, 'guest 46 bits > host 44 bits (configured width; host unreachable)');
  t.deepEqual(byWidth.summary, full.summary);
  t.is(fleetExitCode(byWidth), 2);
});

test('fleetExitCode: 0 all fit; 2 beats 3', (t) => {
  t.is(fleetExitCode(buildFleet(input([{ name: 'hv2', physBits: 46, reachable: true }]))), 0);
  t.is(
    fleetExitCode(
      buildFleet(
        input([
          { name: 'hv2', physBits: 39, reachable: true },
          { name: 'hv3', physBits: null, reachable: false },
        ]),
      ),
    ),
    2,
  );
  t.is(fleetExitCode({ hosts: [], guests: [] }), 0);
});

test('renderFleet: matrix with marks, unreachable hosts and the reasons for each misfit', (t) => {
  const broken: VmStatus = { socket: '/s/dead.qmp', name: 'dead', error: { code: 'QMP_TIMEOUT', message: 'no reply' } };
  const doc = buildFleet(
    input(
      [
        { name: 'hv2', physBits: 39, reachable: true, status: status('x', 39, [vm('db1', 39)]) },
        { name: 'hv3', physBits: null, reachable: false, error: { code: 'PEER_TIMEOUT', message: 'slow' } },
      ],
      [vm('web1', 46), broken],
    ),
  );
  const expected = [
    'hosts:',
    '  hv1: 46 bits, this host',
    '  hv2: 39 bits',
    '  hv3: width unknown, configured, UNREACHABLE (PEER_TIMEOUT: slow)',
    '',
    'GUEST     BITS  hv1  hv2  hv3  NOTE',
    'hv1/web1  46    ✓    ✗    ?',
    'hv1/dead  -     ?    ?    ?    QMP_TIMEOUT: no reply',
    'hv2/db1   39    ✓    ✓    ?',
    '',
    'does not fit:',
    '  hv1/web1 → hv2: guest 46 bits > host 39 bits',
  ].join('\n');
  t.is(renderFleet(doc), expected);
  const ascii = renderFleet(doc, { ascii: true });
  t.true(ascii.includes('hv1/web1  46    yes  NO   ?'));
  t.true(ascii.includes('  hv1/web1 -> hv2: guest 46 bits > host 39 bits'));
  t.false(/[^\x00-\x7f]/.test(ascii));
});

test('renderFleet by width: a column per host width, the count of hosts each guest fits, unreachable hosts listed', (t) => {
  const doc = buildFleet({
    ...input(
      [
        { name: 'hv2', physBits: 39, reachable: true },
        { name: 'hv3', physBits: 39, reachable: true },
        { name: 'hv4', physBits: null, reachable: false, error: { code: 'PEER_TIMEOUT', message: 'slow' } },
      ],
      [vm('web1', 46), vm('db1', 39)],
    ),
    maxMatrixCells: 0,
  });
  const expected = [
    'hosts: 4 (3 reachable); by width: 39 bits: 2, 46 bits: 1, width unknown: 1',
    '  hv4: width unknown, configured, UNREACHABLE (PEER_TIMEOUT: slow)',
    '',
    'GUEST     BITS  39b  46b  ?b  HOSTS FIT  NOTE',
    'hv1/web1  46    ✗    ✓    ?   1/4',
    'hv1/db1   39    ✓    ✓    ?   3/4',
    '',
    'does not fit:',
    '  hv1/web1 → hosts of 39 bits (2): guest 46 bits > host 39 bits',
  ].join('\n');
  t.is(renderFleet(doc), expected);
});

test('renderFleet by width, more guests than MAX_GUEST_ROWS: a row per kind of guest, its count and first guest; unreachable hosts past 50 counted', (t) => {
  // 60 reachable peers of 39 or 46 bits with 20 guests each (three kinds, one not read), 60 unreachable ones.
  const peers: PeerFacts[] = [];
  for (let p = 0; p < 60; p++) {
    const bits = p % 2 ? 46 : 39;
    const vms = Array.from({ length: 20 }, (_, g) =>
      g === 0 && p === 1
        ? { socket: '', name: 'down', error: { code: 'PROM_VM_DOWN', message: 'physbits_vm_up{vm="down"} is 0' } }
        : vm(`vm${g}`, g % 2 ? 46 : 39, { highest: g % 4 === 2 ? 600 * GIB : 36 * GIB }),
    );
    peers.push({
      name: `hv${100 + p}`,
      physBits: bits,
      reachable: true,
      source: 'prometheus',
      status: status(`hv${100 + p}`, bits, vms),
    });
  }
  for (let p = 0; p < 60; p++)
    peers.push({
      name: `gone${p}`,
      physBits: 39,
      reachable: false,
      source: 'prometheus',
      error: { code: 'PROM_TARGET_DOWN', message: 'up is 0' },
    });
  const doc = buildFleet({ peers, policy, maxMatrixCells: 0 });
  t.true(doc.guests.length > MAX_GUEST_ROWS);
  const text = renderFleet(doc);
  const lines = text.split('\n');
  t.is(lines[0], 'hosts: 120 (60 reachable); by width: 39 bits: 90, 46 bits: 30');
  t.is(lines[1], '  gone0: 39 bits, UNREACHABLE (PROM_TARGET_DOWN: up is 0)');
  t.is(lines[51], '  ... and 10 more unreachable hosts (fleet --json lists every one)');
  t.is(lines.length, 64, text);
  t.deepEqual(lines.slice(52), [
    '',
    'guests: 1200 of 4 kinds (a row per kind; fleet --json lists every guest)',
    '',
    'GUESTS  BITS  39b  46b  HOSTS FIT  FIRST       NOTE',
    '299     39    ✓    ✓    120/120    hv100/vm0',
    '600     46    ✗    ✓    30/120     hv100/vm1',
    '300     39    ✗    ✓    30/120     hv100/vm2',
    '1       -     ?    ?    0/120      hv101/down  PROM_VM_DOWN (fleet --json gives each message)',
    '',
    'does not fit:',
    '  600 like hv100/vm1 → hosts of 39 bits (90): guest 46 bits > host 39 bits',
    '  300 like hv100/vm2 → hosts of 39 bits (90): layout ends at 600 GiB > 2^39 (512 GiB)',
  ]);
});
