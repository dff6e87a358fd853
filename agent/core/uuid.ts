/** A guest's UUID as the agent compares it: RFC 4122 text, lower case. */

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** What QEMU's query-uuid answers for a guest started without -uuid (qemu_uuid is all zeros). */
const ZERO_UUID = '00000000-0000-0000-0000-000000000000';

/** `uuid` in lower case, or null for anything that is not one, QEMU's all-zero UUID included. */
export function normalizeUuid(uuid: string | null | undefined): string | null {
  if (typeof uuid !== 'string') return null;
  const u = uuid.trim().toLowerCase();
  return UUID_RE.test(u) && u !== ZERO_UUID ? u : null;
}
