import { timingSafeEqual } from 'node:crypto';
import { sign } from '../../agent/alerts/webhook-sink';

/**
 * A receiver's check: the timestamp header is a whole number of Unix seconds, and the signature header
 * matches HMAC-SHA256 of "<timestamp>.<raw body>" (constant-time comparison).
 */
export function verifySignature(
  body: string | Buffer,
  secret: string,
  timestampHeader: string | undefined | null,
  signatureHeader: string | undefined | null,
): boolean {
  if (!signatureHeader || !timestampHeader || !/^\d+$/.test(timestampHeader)) return false;
  const want = Buffer.from(sign(Number(timestampHeader), body, secret));
  const got = Buffer.from(signatureHeader.trim());
  return want.length === got.length && timingSafeEqual(want, got);
}
