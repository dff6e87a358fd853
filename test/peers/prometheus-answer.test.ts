import test from 'ava';
import {
  AskBudget,
  parseQueryResponse,
  PrometheusError,
  QueryAnswerScanner,
} from '../../agent/peers/prometheus-answer';

const vector = (n: number, extra = '') =>
  JSON.stringify({
    status: 'success',
    ...(extra ? { warnings: [extra] } : {}),
    data: {
      resultType: 'vector',
      result: Array.from({ length: n }, (_, i) => ({
        metric: {
          __name__: 'physbits_host_phys_bits',
          job: 'physbits',
          host: `hv${i}`,
          vm: 'a "quoted" ]} [{ \\ é',
          pad: 'dropped',
        },
        value: [1700000000.5, String(39 + (i % 10))],
      })),
    },
  });

const expected = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    labels: { job: 'physbits', host: `hv${i}`, vm: 'a "quoted" ]} [{ \\ é' },
    value: 39 + (i % 10),
    time: 1700000000.5,
  }));

test('series are cut out and parsed one by one, whatever the chunk boundaries (strings holding brackets, escapes, UTF-8)', (t) => {
  const bytes = Buffer.from(vector(5, 'w'), 'utf8');
  for (const size of [1, 2, 3, 7, 64, bytes.length]) {
    const scanner = new QueryAnswerScanner('q');
    for (let off = 0; off < bytes.length; off += size) scanner.push(bytes.subarray(off, off + size));
    t.deepEqual(scanner.finish(), expected(5), `chunks of ${size}`);
  }
  // Keys in another order, white space everywhere, an empty result, a scalar.
  t.deepEqual(
    parseQueryResponse(
      ' { "data" : { "result" : [ { "value" : [ 1 , "2" ] , "metric" : { } } ] , "resultType" : "vector" } , "status" : "success" } ',
      'q',
    ),
    [{ labels: {}, value: 2, time: 1 }],
  );
  t.deepEqual(parseQueryResponse('{"status":"success","data":{"resultType":"vector","result":[]}}', 'q'), []);
  t.deepEqual(parseQueryResponse('{"status":"success","data":{"resultType":"scalar","result":[1.5, "7"]}}', 'q'), [
    { labels: {}, value: 7, time: 1.5 },
  ]);
});

test('bad answers are PROM_BAD_RESPONSE, error answers PROM_QUERY_FAILED', (t) => {
  const code = (text: string) => (t.throws(() => parseQueryResponse(text, 'q')) as PrometheusError).code;
  t.is(code('nope'), 'PROM_BAD_RESPONSE');
  t.is(
    code('{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}'),
    'PROM_BAD_RESPONSE',
  );
  t.is(
    code('{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}'),
    'PROM_BAD_RESPONSE',
  );
  t.is(code('{"status":"success","data":{"resultType":"matrix","result":[]}}'), 'PROM_BAD_RESPONSE');
  t.is(code('{"status":"success","data":{"resultType":"vector","result":[]}} trailing'), 'PROM_BAD_RESPONSE');
  t.is(
    code(`{"status":"success","warnings":["${'x'.repeat(70_000)}"],"data":{"resultType":"vector","result":[]}}`),
    'PROM_BAD_RESPONSE',
  );
  t.is(code('{"status":"error","errorType":"bad_data","error":"parse error"}'), 'PROM_QUERY_FAILED');
});

test('the series of one ask are counted against one budget: past maxSeries is PROM_TOO_MANY_SERIES, past maxBytes PROM_RESPONSE_TOO_LARGE', (t) => {
  const budget = new AskBudget(10_000_000, 15);
  t.is(parseQueryResponse(vector(10), 'first', budget).length, 10);
  const err = t.throws(() => parseQueryResponse(vector(10), 'second', budget)) as PrometheusError;
  t.is(err.code, 'PROM_TOO_MANY_SERIES');
  t.is(err.message, 'second: the answers of one ask passed fleet.maxSeries (15 series)');
  const bytes = new AskBudget(1000, 100);
  bytes.takeBytes(600, 'a');
  t.false(bytes.fits(401));
  const big = t.throws(() => bytes.takeBytes(401, 'b')) as PrometheusError;
  t.is(big.code, 'PROM_RESPONSE_TOO_LARGE');
  t.is(big.message, 'b: the answers of one ask passed fleet.maxResponseBytes (1000 bytes)');
});
