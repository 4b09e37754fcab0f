// One room's WebSocket (/ws/chat/<room>/?token=...), reopened after any loss
// with exponential backoff and jitter until it is closed on purpose.

/** Milliseconds before reconnect attempt `attempt` (0, 1, ...): 0.5 s doubling to 30 s, times 0.5-1.5. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(30000, 500 * 2 ** Math.min(attempt, 16));
  return Math.round(base * (0.5 + random()));
}

// Closes after which reconnecting cannot help: the user was removed from the
// room or the room deactivated (4403), or the token expired (4401).
const FINAL_CLOSES = new Set([4401, 4403]);

// The backoff starts again from 0.5 s only after a socket stayed open this
// long: a server that accepts and then drops at once is not retried at 2/s.
const STABLE_MS = 10000;

export class RoomSocket {
  /**
   * handlers: onEvent(event), onState("connecting" | "connected" | "offline"),
   * onOpen(reopened: bool), onFinal(code, reason). `deviceId`: this
   * browser's device (e2e.js), so an encrypted room's messages carry its ciphertext.
   */
  constructor(roomId, token, handlers, deviceId = null) {
    this.roomId = roomId;
    this.token = token;
    this.deviceId = deviceId;
    this.handlers = handlers;
    this.attempt = 0;
    this.opened = false;
    this.stopped = false;
    this.timer = null;
    this.onOnline = () => { if (!this.isOpen()) this.reconnectNow(); };
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  isOpen() { return this.ws?.readyState === WebSocket.OPEN; }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.handlers.onState("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ token: this.token, session_type: "web" });
    if (this.deviceId) query.set("device_id", this.deviceId);
    const ws = new WebSocket(`${scheme}://${location.host}/ws/chat/${this.roomId}/?${query}`);
    this.ws = ws;
    ws.onopen = () => {
      clearTimeout(this.stable);
      this.stable = setTimeout(() => { this.attempt = 0; }, STABLE_MS);
      this.handlers.onState("connected");
      this.handlers.onOpen(this.opened);
      this.opened = true;
    };
    ws.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      this.handlers.onEvent(event);
    };
    ws.onclose = (close) => {
      if (ws !== this.ws || this.stopped) return;
      clearTimeout(this.stable);
      if (FINAL_CLOSES.has(close.code)) {
        this.stop();
        this.handlers.onState("offline");
        this.handlers.onFinal(close.code, close.reason);
        return;
      }
      this.handlers.onState(navigator.onLine === false ? "offline" : "connecting");
      const delay = backoffDelay(this.attempt++);
      this.timer = setTimeout(() => this.connect(), delay);
      // Past a few failed attempts the server is away: say so until it is back.
      if (this.attempt > 3) this.handlers.onState("offline");
    };
  }

  reconnectNow() {
    if (this.stopped) return;
    this.attempt = 0;
    if (this.ws && this.ws.readyState !== WebSocket.CLOSED) {
      this.ws.onclose = null;
      this.ws.close();
    }
    this.connect();
  }

  /** Sends a frame if the socket is open; false otherwise. */
  send(frame) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.stable);
    window.removeEventListener("online", this.onOnline);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
  }
}
