// The user id chatd gives a token's `sub` (ChatCore IDs.userID): the sub
// itself when it is a UUID, otherwise a UUIDv5 of it. SHA-1 is written out
// here because crypto.subtle exists only in secure contexts (not on plain
// http to another host), and the client must know its own id anywhere.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** SHA-1 (FIPS 180-4) of a byte array, as 20 bytes. */
export function sha1(bytes) {
  const length = bytes.length;
  const padded = new Uint8Array(((length + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length << 3) >>> 0);
  let [a0, b0, c0, d0, e0] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
  const w = new Uint32Array(80);
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + i * 4);
    for (let i = 16; i < 80; i++) {
      const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
      w[i] = (x << 1) | (x >>> 31);
    }
    let [a, b, c, d, e] = [a0, b0, c0, d0, e0];
    for (let i = 0; i < 80; i++) {
      let f, k;
      if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
      else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
      else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
      else { f = b ^ c ^ d; k = 0xca62c1d6; }
      const t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) >>> 0;
      [e, d, c, b, a] = [d, c, (b << 30) | (b >>> 2), a, t];
    }
    [a0, b0, c0, d0, e0] = [(a0 + a) >>> 0, (b0 + b) >>> 0, (c0 + c) >>> 0, (d0 + d) >>> 0, (e0 + e) >>> 0];
  }
  const out = new Uint8Array(20);
  const outView = new DataView(out.buffer);
  [a0, b0, c0, d0, e0].forEach((word, i) => outView.setUint32(i * 4, word));
  return out;
}

function uuidBytes(text) {
  const hex = text.replace(/-/g, "");
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16));
}

function formatUUID(bytes) {
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** A name-based UUIDv5 (RFC 9562 §5.5) as 16 bytes. */
export function uuid5(namespace, name) {
  const nameBytes = new TextEncoder().encode(name);
  const input = new Uint8Array(16 + nameBytes.length);
  input.set(namespace);
  input.set(nameBytes, 16);
  const digest = sha1(input).slice(0, 16);
  digest[6] = (digest[6] & 0x0f) | 0x50;
  digest[8] = (digest[8] & 0x3f) | 0x80;
  return digest;
}

// RFC 9562's NAMESPACE_URL, and chatd's namespace for subjects under it.
const URL_NAMESPACE = uuidBytes("6ba7b811-9dad-11d1-80b4-00c04fd430c8");
const SUBJECT_NAMESPACE = uuid5(URL_NAMESPACE, "chat-api:user-subject");

/** The user id chatd gives a token subject. */
export function userIdForSubject(sub) {
  if (UUID.test(sub)) return sub.toLowerCase();
  return formatUUID(uuid5(SUBJECT_NAMESPACE, sub));
}
