/**
 * A scripted Prometheus query API in a process of its own (its writes are not the reader's event
 * loop): every request is answered with one instant vector of about `mb` MB, series of ~200 bytes,
 * each a host of its own. Killed by the test's teardown.
 */
import { spawn } from 'node:child_process';

const SERVER = `
const http = require('node:http');
const mb = Number(process.argv[1]);
const series = [];
let size = 0;
for (let i = 0; size < mb * 1e6; i++) {
  const s = '{"metric":{"__name__":"physbits_host_info","job":"physbits","instance":"10.' + (i >> 16) + '.' + ((i >> 8) & 255) + '.' + (i & 255) + ':9741","host":"hv' + i + '","pad":"' + 'p'.repeat(80) + '"},"value":[1700000000,"1"]}';
  series.push(s);
  size += s.length + 1;
}
const body = Buffer.from('{"status":"success","data":{"resultType":"vector","result":[' + series.join(',') + ']}}');
let hits = 0;
const server = http.createServer((req, res) => {
  hits++;
  res.writeHead(200, { 'content-type': 'application/json', 'x-hits': String(hits) });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

export async function startBigAnswerServer(t: { teardown(fn: () => void): void }, mb: number): Promise<string> {
  const child = spawn(process.execPath, ['-e', SERVER, String(mb)], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', (code) => reject(new Error(`scripted server exited ${code}`)));
  });
  return `http://127.0.0.1:${port}`;
}
