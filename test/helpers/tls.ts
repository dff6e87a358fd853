/**
 * Throwaway certificate authorities for https tests, made with Debian's openssl: a CA and a server
 * certificate it signed for the given names (`IP:127.0.0.1`, `DNS:peer.test`), each in PEM files.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TestPki {
  /** The CA certificate (PEM file): what a client trusts. */
  caFile: string;
  /** The server's key and certificate (PEM text), for https.createServer. */
  key: string;
  cert: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20000 });
}

/** A fresh CA named `name` in `dir`, and a server certificate it signed for `altNames`. */
export function makeTestPki(dir: string, name: string, altNames: string[] = ['IP:127.0.0.1']): TestPki {
  const p = (f: string) => join(dir, `${name}-${f}`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    ['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2', '-subj', `/CN=${name} test CA`],
    dir,
  );
  openssl(['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', `/CN=${name} server`], dir);
  writeFileSync(p('server.ext'), `subjectAltName=${altNames.join(',')}\n`);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      p('server.csr'),
      '-CA',
      p('ca.pem'),
      '-CAkey',
      p('ca.key'),
      '-CAcreateserial',
      '-out',
      p('server.pem'),
      '-days',
      '2',
      '-extfile',
      p('server.ext'),
    ],
    dir,
  );
  return {
    caFile: p('ca.pem'),
    key: readFileSync(p('server.key'), 'utf8'),
    cert: readFileSync(p('server.pem'), 'utf8'),
  };
}
