// End-to-end encryption in the browser (docs/webclient.md, "Encrypted
// rooms"): this browser's device keys, published to the server's key
// directory, and an X3DH-style seal and open of each message for each
// device (a fresh agreement per message; no ratchet after it). The server
// only keeps and routes the envelopes (docs/api.md, "Encrypted rooms").
//
// Private keys are non-extractable CryptoKeys kept in IndexedDB: the page
// can use them, no script can read them out. Web Crypto has no
// ChaCha20-Poly1305, so the box is AES-256-GCM.

const DB_NAME = "chatd-e2e";
const STORE = "devices";
// One-time prekeys made at a time; more are made when fewer than
// REFILL_BELOW are left unclaimed (each message to a device claims one).
const PREKEYS = 20;
const REFILL_BELOW = 5;
const INFO = new TextEncoder().encode("chatd-x3dh-web");

const X25519 = { name: "X25519" };
const ED25519 = { name: "Ed25519" };

function toBase64(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    out.set(new Uint8Array(part), at);
    at += part.byteLength;
  }
  return out;
}

/** Whether this browser's Web Crypto has X25519 and Ed25519. */
export async function supported() {
  try {
    await crypto.subtle.generateKey(X25519, false, ["deriveBits"]);
    await crypto.subtle.generateKey(ED25519, false, ["sign", "verify"]);
    return true;
  } catch {
    return false;
  }
}

// MARK: IndexedDB: one device record per user id.

function openDatabase() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function withStore(mode, use) {
  const db = await openDatabase();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = use(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

// MARK: keys

async function keyPair(algorithm, usages) {
  const pair = await crypto.subtle.generateKey(algorithm, false, usages);
  return { privateKey: pair.privateKey, publicRaw: new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)) };
}

async function oneTimePrekeys(count) {
  const keys = [];
  for (let i = 0; i < count; i++) {
    const pair = await keyPair(X25519, ["deriveBits"]);
    // `published` once the server has it: each is sent once (a claimed one
    // the server has forgotten must not come back to be claimed again).
    keys.push({ privateKey: pair.privateKey, public: toBase64(pair.publicRaw), published: false });
  }
  return keys;
}

function newDeviceId() {
  // A UUID (version 4) from getRandomValues: the key directory wants a UUID.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const importX25519 = (raw) => crypto.subtle.importKey("raw", raw, X25519, false, []);
const agree = async (privateKey, publicKey) => new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: publicKey }, privateKey, 256));

/** HKDF-SHA256 over 32 0xFF bytes and the Diffie-Hellman outputs (as X3DH does) to an AES-256-GCM key. */
async function messageKey(secrets) {
  const material = await crypto.subtle.importKey("raw", concat(new Uint8Array(32).fill(0xff), ...secrets), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info: INFO }, material,
    { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

/**
 * This browser's device of one user: an Ed25519 key that signs, an X25519
 * identity, a signed prekey and one-time prekeys, laid out on the wire as
 * the key directory wants them (the identity key is the Ed25519 public key
 * followed by the X25519 one).
 */
export class Device {
  constructor(userId, record) {
    this.userId = userId;
    this.record = record;
    this.id = record.id;
  }

  /** The device kept for `userId`, or a new one (kept before it is returned). */
  static async load(userId) {
    let record = await withStore("readonly", (store) => store.get(userId));
    if (!record) {
      const signing = await keyPair(ED25519, ["sign"]);
      const signedPrekey = await keyPair(X25519, ["deriveBits"]);
      record = {
        id: newDeviceId(), signing, identity: await keyPair(X25519, ["deriveBits"]), signedPrekey,
        signature: toBase64(await crypto.subtle.sign(ED25519, signing.privateKey, signedPrekey.publicRaw)),
        oneTime: await oneTimePrekeys(PREKEYS),
      };
      await withStore("readwrite", (store) => store.put(record, userId));
    }
    return new Device(userId, record);
  }

  /** Forgets the keys kept for `userId` (sign-out: the server's copy is deleted first). */
  static forget(userId) {
    return withStore("readwrite", (store) => store.delete(userId));
  }

  /** The body of `PUT /api/chat/keys/devices/{id}/` with these one-time prekeys. */
  publication(prekeys) {
    const r = this.record;
    return {
      identity_key: toBase64(concat(r.signing.publicRaw, r.identity.publicRaw)),
      signed_prekey: toBase64(r.signedPrekey.publicRaw), signature: r.signature,
      one_time_prekeys: prekeys.map((k) => k.public),
    };
  }

  /** Sends the keys with the one-time prekeys not sent yet: the server's answer. */
  async send(api) {
    const fresh = this.record.oneTime.filter((k) => !k.published).slice(0, 100);
    const answer = await api.put(`/api/chat/keys/devices/${this.id}/`, this.publication(fresh));
    if (fresh.length) {
      for (const key of fresh) key.published = true;
      await withStore("readwrite", (store) => store.put(this.record, this.userId));
    }
    return answer;
  }

  /**
   * Publishes the keys (at sign-in, and as a room opens); when few
   * one-time prekeys are left unclaimed, makes more and publishes them.
   * Private prekeys are kept after use, so that the history stays
   * readable on this device: the price is that one stolen with the
   * browser's profile opens the messages sealed with it.
   */
  async publish(api) {
    const answer = await this.send(api);
    if (answer.one_time_prekey_count >= REFILL_BELOW) return;
    this.record.oneTime.push(...await oneTimePrekeys(PREKEYS));
    await withStore("readwrite", (store) => store.put(this.record, this.userId));
    await this.send(api);
  }

  /**
   * `text` sealed for the device of `bundle` (one entry of `GET
   * /api/chat/keys/users/{id}/`), after checking its signed prekey's
   * signature: base64 of a JSON envelope.
   */
  async seal(text, bundle) {
    const theirKeys = fromBase64(bundle.identity_key);
    if (theirKeys.length !== 64) throw new Error(`device ${bundle.device_id}: an identity key is 64 bytes`);
    const signer = await crypto.subtle.importKey("raw", theirKeys.slice(0, 32), ED25519, false, ["verify"]);
    const prekeyRaw = fromBase64(bundle.signed_prekey);
    if (!await crypto.subtle.verify(ED25519, signer, fromBase64(bundle.signature), prekeyRaw)) {
      throw new Error(`device ${bundle.device_id}: its signed prekey's signature does not verify`);
    }
    const theirIdentity = await importX25519(theirKeys.slice(32));
    const theirPrekey = await importX25519(prekeyRaw);
    const ephemeral = await crypto.subtle.generateKey(X25519, false, ["deriveBits"]);
    const secrets = [
      await agree(this.record.identity.privateKey, theirPrekey),
      await agree(ephemeral.privateKey, theirIdentity),
      await agree(ephemeral.privateKey, theirPrekey),
    ];
    if (bundle.one_time_prekey) secrets.push(await agree(ephemeral.privateKey, await importX25519(fromBase64(bundle.one_time_prekey))));
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const box = await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: concat(this.record.identity.publicRaw, theirKeys.slice(32)) },
      await messageKey(secrets), new TextEncoder().encode(text));
    const envelope = {
      v: 1, identity: toBase64(this.record.identity.publicRaw),
      ephemeral: toBase64(new Uint8Array(await crypto.subtle.exportKey("raw", ephemeral.publicKey))),
      one_time_prekey: bundle.one_time_prekey || null, nonce: toBase64(nonce), box: toBase64(box),
    };
    // Every value is base64 or a number: the JSON is ASCII, which btoa takes.
    return btoa(JSON.stringify(envelope));
  }

  /** What `seal` made for this device, opened; throws if it is not this device's or was altered. */
  async open(ciphertext) {
    const envelope = JSON.parse(atob(ciphertext));
    if (envelope.v !== 1) throw new Error("an envelope of another version");
    const theirRaw = fromBase64(envelope.identity);
    const theirIdentity = await importX25519(theirRaw);
    const ephemeral = await importX25519(fromBase64(envelope.ephemeral));
    const r = this.record;
    const secrets = [
      await agree(r.signedPrekey.privateKey, theirIdentity),
      await agree(r.identity.privateKey, ephemeral),
      await agree(r.signedPrekey.privateKey, ephemeral),
    ];
    if (envelope.one_time_prekey) {
      const mine = r.oneTime.find((k) => k.public === envelope.one_time_prekey);
      if (!mine) throw new Error("sealed with a one-time prekey this device does not have");
      secrets.push(await agree(mine.privateKey, ephemeral));
    }
    const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: fromBase64(envelope.nonce), additionalData: concat(theirRaw, r.identity.publicRaw) },
      await messageKey(secrets), fromBase64(envelope.box));
    return new TextDecoder().decode(plain);
  }
}

/**
 * `text` sealed for every device of every member of `room` (this user's
 * own devices too, so they read what they sent): the `ciphertexts` of an
 * encrypted message. Each bundle fetched claims one of its one-time prekeys.
 */
export async function sealForRoom(api, device, room, text) {
  const members = new Set([device.userId, ...(room.participants || []).map((p) => p.id)]);
  // The members' bundles fetched at once, not one round trip after another.
  const sealed = await Promise.all([...members].map(async (member) => {
    const { devices } = await api.get(`/api/chat/keys/users/${member}/`);
    return Promise.all(devices.map(async (bundle) => [bundle.device_id, await device.seal(text, bundle)]));
  }));
  return Object.fromEntries(sealed.flat());
}
