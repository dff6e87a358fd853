import { timingSafeEqual } from 'node:crypto';
import { sign } from '../../agent/alerts/webhook-sink';

/** A receiver's constant-time check of the signature header against the raw body. */
export function verifySignature(body: string | Buffer, secret: string, header: string | undefined | null): boolean {
  if (!header) return false;
  const want = Buffer.from(sign(body, secret));
  const got = Buffer.from(header.trim());
  return want.length === got.length && timingSafeEqual(want, got);
}
