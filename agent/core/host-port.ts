/**
 * "host:port" and "[v6]:port", as the config's listen addresses write them: one parser. (qmp/address.ts
 * reads QMP addresses itself and joins them with joinHostPort: qmp/ imports nothing of agent/.)
 */

const HOST_PORT = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/;

/** The host (brackets removed) and port of "host:port" / "[v6]:port"; null when it is not one. */
export function splitHostPort(text: string): { host: string; port: number } | null {
  const m = HOST_PORT.exec(text);
  if (!m) return null;
  const port = Number(m[3]);
  return port <= 65535 ? { host: m[1] ?? m[2], port } : null;
}
