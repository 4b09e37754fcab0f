// REST calls to chatd (docs/api.md, docs/openapi.yaml): every call carries
// the bearer token; an error answer becomes an ApiError with the server's text.

export class ApiError extends Error {
  constructor(status, body) {
    super(ApiError.describe(status, body));
    this.status = status;
    this.body = body;
  }

  /** DRF's bodies: {"detail"}, {"error"}, or {"field": ["..."]}. */
  static describe(status, body) {
    if (body && typeof body === "object") {
      if (typeof body.detail === "string") return body.detail;
      if (typeof body.error === "string") return body.error;
      const fields = Object.entries(body).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(" ") : v}`);
      if (fields.length) return fields.join("; ");
    }
    return status === 0 ? "The server cannot be reached." : `The server answered ${status}.`;
  }
}

/** A path of this origin for a link the server made absolute (from its publicURL). */
export function localPath(url) {
  const parsed = new URL(url, location.origin);
  return parsed.pathname + parsed.search;
}

// A request the server has not answered in this long is given up (status 0),
// so a hung connection cannot hold the one-at-a-time send queue.
const TIMEOUT_MS = 30000;

export class Api {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
    // This browser's device (e2e.js), once its keys are published: messages
    // of encrypted rooms come with this device's ciphertext.
    this.deviceId = null;
  }

  headers() {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (this.deviceId) headers["X-Device-Id"] = this.deviceId;
    return headers;
  }

  async request(method, path, body) {
    const headers = this.headers();
    const init = { method, headers, signal: AbortSignal.timeout(TIMEOUT_MS) };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, null);
    }
    let text;
    try {
      text = await response.text();
    } catch {
      throw new ApiError(0, null);
    }
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
    if (response.status === 401 && this.onUnauthorized) this.onUnauthorized(ApiError.describe(401, parsed));
    if (!response.ok) throw new ApiError(response.status, parsed);
    return parsed;
  }

  get(path) { return this.request("GET", path); }
  post(path, body = {}) { return this.request("POST", path, body); }
  patch(path, body) { return this.request("PATCH", path, body); }
  put(path, body) { return this.request("PUT", path, body); }
  delete(path) { return this.request("DELETE", path); }

  /** Every page of a DRF list, following `next` (at most `maxPages`). */
  async all(path, maxPages = 10) {
    const results = [];
    let next = path;
    for (let page = 0; next && page < maxPages; page++) {
      const answer = await this.get(next);
      results.push(...answer.results);
      next = answer.next ? localPath(answer.next) : null;
    }
    return results;
  }

  rooms() { return this.all("/api/chat/rooms/?page_size=100"); }
  publicRooms() { return this.all("/api/chat/rooms/?room_type=public&discover=true&page_size=100"); }
  room(id) { return this.get(`/api/chat/rooms/${id}/`); }
  createRoom(name, roomType, participantIds, encrypted = false) {
    const body = { name, room_type: roomType, participant_ids: participantIds };
    if (encrypted) body.encrypted = true;
    return this.post("/api/chat/rooms/", body);
  }
  directMessage(userId) { return this.post("/api/chat/rooms/direct_message/", { user_id: userId }); }
  join(roomId) { return this.post(`/api/chat/rooms/${roomId}/join/`); }

  /** One page of a room's messages, newest first; `cursor` is {before} or {after}. */
  messages(roomId, cursor = {}, pageSize = 50) {
    const query = new URLSearchParams({ page_size: String(pageSize), ...cursor });
    return this.get(`/api/chat/rooms/${roomId}/messages/?${query}`);
  }
  sendMessage(roomId, body) { return this.post(`/api/chat/rooms/${roomId}/messages/`, body); }
  /** `change`: the new `content`, or in an encrypted room `{ciphertexts}`. */
  editMessage(roomId, id, change) { return this.patch(`/api/chat/rooms/${roomId}/messages/${id}/`, change); }
  deleteMessage(roomId, id) { return this.delete(`/api/chat/rooms/${roomId}/messages/${id}/`); }
  react(roomId, id, emoji, action) {
    return this.post(`/api/chat/rooms/${roomId}/messages/${id}/react/`, { emoji, action });
  }
  markRoomRead(roomId) { return this.post(`/api/chat/rooms/${roomId}/mark_read/`); }
  markRead(roomId, id) { return this.post(`/api/chat/rooms/${roomId}/messages/${id}/mark_read/`); }
  searchMessages(filters) {
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    return this.get(`/api/chat/search/messages/?${query}`);
  }

  /** The bytes behind an attachment URL, as a Blob (downloads need the token). */
  async download(url) {
    const response = await fetch(localPath(url), { headers: this.headers() });
    if (!response.ok) throw new ApiError(response.status, null);
    return response.blob();
  }

  /**
   * A message with a file (multipart `file_attachment`), through
   * XMLHttpRequest because fetch reports no upload progress.
   * `onProgress` gets a fraction from 0 to 1.
   */
  upload(roomId, fields, file, onProgress) {
    const form = new FormData();
    for (const [key, value] of Object.entries(fields)) if (value) form.append(key, value);
    form.append("file_attachment", file, file.name);
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/api/chat/rooms/${roomId}/messages/`);
      for (const [name, value] of Object.entries(this.headers())) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => { if (event.lengthComputable) onProgress(event.loaded / event.total); };
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { body = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new ApiError(xhr.status, body));
      };
      xhr.onerror = () => reject(new ApiError(0, null));
      xhr.send(form);
    });
  }
}
