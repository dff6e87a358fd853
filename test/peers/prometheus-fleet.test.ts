import test from 'ava';
import { fleetQueries, guestWidthQueries, hostQueries, jobMatcher } from '../../agent/peers/prometheus-fleet';

test('every query selects fleet.job: one job by equality, several by an anchored, escaped regular expression', (t) => {
  t.is(jobMatcher(), 'job="physbits"');
  t.is(jobMatcher(['hv "east"']), 'job="hv \\"east\\""');
  t.is(jobMatcher(['physbits', 'lab.b', 'a|b']), 'job=~"physbits|lab\\\\.b|a\\\\|b"');
  t.deepEqual(hostQueries({ lookbackSeconds: 600 }), {
    hosts: 'last_over_time(physbits_host_info{job="physbits"}[600s])',
    up: 'up{job="physbits"} and on (job, instance) last_over_time(physbits_host_info{job="physbits"}[600s])',
    widths: 'last_over_time(physbits_host_phys_bits{job="physbits"}[600s])',
    fresh: 'timestamp(physbits_host_phys_bits{job="physbits"})',
  });
  const fleet = fleetQueries({ lookbackSeconds: 60, jobs: ['a', 'b'] });
  for (const q of Object.values(fleet)) t.regex(q, /\{job=~"a\|b"\}/, q);
  t.is(fleet.guests, 'physbits_guest_phys_bits{job=~"a|b"}');
  t.deepEqual(guestWidthQueries({ name: 'web1', uuid: null }, ['x']), ['physbits_guest_phys_bits{job="x",vm="web1"}']);
});
