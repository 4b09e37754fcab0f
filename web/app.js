// The chatd web client: sign-in, rooms, the open room's messages over REST
// and its WebSocket, search. docs/webclient.md describes what it does and
// the DOM contract the browser tests rely on.

import { Api, ApiError, localPath } from "./api.js";
import { RoomCalls } from "./call.js";
import { Device, sealForRoom, supported as encryptionSupported } from "./e2e.js";
import { RoomSocket } from "./socket.js";
import { userIdForSubject } from "./sha1.js";
import { el, messageItem, publicRoomItem, roomItem, roomName, searchItem, userName } from "./view.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "chatd.token";
const PAGE = 50;
// Typing: sent at most this often while typing, `false` after this long without a key.
const TYPING_RESEND_MS = 3000;
const TYPING_STOP_MS = 4000;
// Another user's typing shows this long after their last `true` (they resend every 3 s).
const TYPING_SHOW_MS = 8000;
// The server broadcasts no receipts (api-contract.md): the newest page is re-read this often for `read_by`,
// and every REFRESH_FAST_MS for a minute after one's own message, while the others' receipts for it come in.
const REFRESH_MS = 15000;
const REFRESH_FAST_MS = 5000;
const FAST_FOR_MS = 60000;
// The room list: other rooms' activity reaches no socket of ours, so it is re-read this often.
const ROOMS_MS = 30000;
// Catch-up after a (re)open reads at most this many pages of 100; past that the newest page is reloaded.
const CATCH_UP_PAGES = 10;
// Read receipts go out at most this often (10/s), one request at a time.
const RECEIPT_GAP_MS = 100;
const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

const state = {
  api: null, me: null, rooms: new Map(), roomId: null, room: null, socket: null,
  messages: new Map(), elements: new Map(), pending: new Map(),
  oldestId: null, hasOlder: false, loadingOlder: false,
  // resume: the message after which nothing is missing ({id, timestamp}); moved only by the first page,
  // socket events while caught up, and a finished catch-up (never by a poll or a send's answer).
  resume: null, caughtUp: false, liveNewest: null,
  readQueue: new Set(), readSending: false, readTimer: null, roomsTimer: null,
  replyTo: null, editing: null, typing: new Map(), typingSentAt: 0, typingStop: null,
  readSent: new Set(), observer: null, catchUpGen: 0, catchingUp: false, refreshedAt: 0, sentAt: 0, timers: [], previews: new Map(), reactFor: null, file: null,
  // Encrypted rooms: this browser's device (null until its keys are published, or without Web Crypto's
  // X25519), and what its ciphertexts opened to, by ciphertext (an edit brings a new one).
  device: null, plaintexts: new Map(),
  // The open room's calls (call.js).
  calls: null,
};

// MARK: sign-in

function decodeToken(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("That is not a JWT (three parts separated by dots).");
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof claims.sub !== "string" || !claims.sub) throw new Error("The token has no `sub`.");
  return claims;
}

async function signIn(token) {
  let claims;
  try {
    claims = decodeToken(token.trim());
  } catch (error) {
    showError(`Cannot read the token: ${error.message}`);
    return;
  }
  const id = userIdForSubject(claims.sub);
  const name = claims.name || (claims.email ? claims.email.split("@")[0] : claims.sub);
  state.me = { id, display_name: name, email: claims.email || null };
  const api = new Api(token.trim(), (why) => { if (state.api === api) { showError(`Signed out: ${why}`); signOut(); } });
  state.api = api;
  try {
    await loadRooms();
  } catch (error) {
    if (state.api !== api) return;
    if (error.status !== 401) showError(error.message);
    if (error.status === 401 || error.status === 403) signOut();
    return;
  }
  // A second sign-in started while this one waited: that one wins.
  if (state.api !== api) return;
  await setUpDevice(api);
  if (state.api !== api) return;
  localStorage.setItem(TOKEN_KEY, token.trim());
  $("signin-view").hidden = true;
  $("app-view").hidden = false;
  $("signout-button").hidden = false;
  $("me-box").hidden = false;
  $("me").textContent = name;
  $("me-id").textContent = id;
  setConnection("connected");
  stopTimers();
  state.timers.push(setInterval(() => { if (!document.hidden) loadRooms().catch(roomsFailed); }, ROOMS_MS));
  state.timers.push(setInterval(() => {
    const now = Date.now();
    const due = now - state.refreshedAt >= (now - state.sentAt < FAST_FOR_MS ? REFRESH_FAST_MS : REFRESH_MS) - 500;
    if (due) refreshOpenRoom();
  }, REFRESH_FAST_MS));
  document.body.dataset.ready = "true";
}

/**
 * This browser's device keys for the signed-in user, made once and
 * published at every sign-in (e2e.js). Without them the client still runs;
 * encrypted rooms then show that their messages are not for this device.
 */
async function setUpDevice(api) {
  if (!await encryptionSupported()) return;
  try {
    const device = await Device.load(state.me.id);
    await device.publish(api);
    if (state.api !== api) return;
    state.device = device;
    api.deviceId = device.id;
    document.body.dataset.deviceId = device.id;
  } catch (error) {
    showError(`Encrypted rooms are unavailable on this device: ${error.message}`);
  }
}

function stopTimers() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  clearTimeout(state.roomsTimer);
}

/**
 * `forget`: the user signed out (not a token that expired), so this
 * browser's device leaves the key directory (a user has at most 10) and
 * its keys are dropped; its encrypted history is unreadable from then on.
 */
function signOut({ forget = false } = {}) {
  closeRoom();
  stopTimers();
  localStorage.removeItem(TOKEN_KEY);
  for (const url of state.previews.values()) URL.revokeObjectURL(url);
  if (forget && state.device && state.api) {
    const { device, api } = state;
    // The keys go from the browser first: a sign-in right after makes a new device, not one being deleted.
    Device.forget(device.userId).catch(() => {});
    api.delete(`/api/chat/keys/devices/${device.id}/`).catch(() => {});
  }
  Object.assign(state, { api: null, me: null, rooms: new Map(), readSent: new Set(), previews: new Map(), device: null, plaintexts: new Map() });
  delete document.body.dataset.ready;
  delete document.body.dataset.deviceId;
  $("room-list").replaceChildren();
  $("search-results").replaceChildren();
  $("public-rooms").replaceChildren();
  $("app-view").hidden = true;
  $("signin-view").hidden = false;
  $("signout-button").hidden = true;
  $("me-box").hidden = true;
  $("token-input").value = "";
  setConnection("offline");
}

function showError(text) {
  const banner = $("error-banner");
  banner.textContent = text;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { banner.textContent = ""; }, 10000);
}

function setConnection(value) {
  const node = $("connection-state");
  node.dataset.state = value;
  node.textContent = value;
}

function roomsFailed(error) {
  if (error.status === 0 && !state.roomId) setConnection("offline");
}

/** The room list again soon: after socket events and receipts, which change last messages and unread counts. */
function refreshRoomsSoon() {
  clearTimeout(state.roomsTimer);
  state.roomsTimer = setTimeout(() => { if (state.api) loadRooms().catch(roomsFailed); }, 1000);
}

// MARK: rooms

async function loadRooms() {
  const rooms = await state.api.rooms();
  if (!state.api) return;
  state.rooms = new Map(rooms.map((room) => [room.id, room]));
  // With a room open the state is its socket's; otherwise whether REST answers.
  if (!state.roomId && state.me) setConnection("connected");
  renderRooms();
}

function renderRooms() {
  const list = $("room-list");
  const old = new Map([...list.children].map((node) => [node.dataset.roomId, node]));
  const focused = document.activeElement?.closest?.("#room-list .room")?.dataset.roomId;
  const items = [...state.rooms.values()].map((room) => {
    const fresh = roomItem(room, state.me.id, room.id === state.roomId);
    const existing = old.get(room.id);
    return existing && existing.outerHTML === fresh.outerHTML ? existing : fresh;
  });
  list.replaceChildren(...items);
  if (focused) list.querySelector(`[data-room-id="${focused}"] button`)?.focus();
  if (!state.rooms.size) list.append(el("li", { class: "empty", text: "No rooms yet: create one, or discover public rooms." }));
  // Rebuilt only when the rooms change, so an open select is left alone.
  const select = $("search-room");
  const options = [...state.rooms.values()].map((room) => el("option", { value: room.id, text: roomName(room, state.me.id) }))
    .sort((a, b) => a.textContent.localeCompare(b.textContent));
  const signature = options.map((option) => option.outerHTML).join("");
  if (select.dataset.signature === signature) return;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "Any room" }), ...options);
  select.dataset.signature = signature;
  select.value = chosen;
}

async function openRoom(roomId) {
  closeRoom();
  state.roomId = roomId;
  setConnection("connecting");
  const room = state.rooms.get(roomId) ?? await state.api.room(roomId).catch((error) => { showError(error.message); return null; });
  if (state.roomId !== roomId) return;
  if (!room) {
    state.roomId = null;
    setConnection("connected");
    return;
  }
  state.room = room;
  $("open-room-name").textContent = roomName(room, state.me.id);
  $("open-room-members").textContent = `${room.participants?.length ?? 0} members`;
  $("open-room-lock").hidden = !room.encrypted;
  $("message-list").dataset.roomId = roomId;
  setComposerEnabled(true);
  // Each open tops up this device's one-time prekeys (every message to it claims one).
  if (room.encrypted && state.device) state.device.publish(state.api).catch(() => {});
  state.calls = new RoomCalls(roomId, {
    api: state.api, me: state.me.id, names: memberName, send: (frame) => state.socket?.send(frame) ?? false, report: showError,
  });
  document.body.classList.add("room-open");
  renderRooms();
  state.observer = new IntersectionObserver(onVisible, { root: $("message-list"), threshold: 0.5 });
  try {
    if (!await loadNewestPage(roomId)) return;
  } catch (error) {
    showError(error.message);
  }
  if (state.roomId !== roomId) return;
  // Every open, the first one too, catches up from the resume point: the
  // first page was read before the socket listened.
  state.socket = new RoomSocket(roomId, state.api.token, {
    onEvent: onSocketEvent, onState: setConnection, onOpen: () => catchUp(), onFinal: socketEnded,
  }, state.device?.id);
}

/** The newest page into the list; it sets the resume point when there is none yet. False when the room changed meanwhile. */
async function loadNewestPage(roomId) {
  const page = await state.api.messages(roomId, {}, PAGE);
  if (state.roomId !== roomId) return false;
  for (const message of page.results.slice().reverse()) upsertMessage(message, false);
  state.resume = newer(state.resume, page.results[0]);
  state.hasOlder = Boolean(page.next);
  $("message-list").dataset.hasOlder = String(state.hasOlder);
  $("load-older-state").textContent = state.hasOlder ? "" : "Start of the conversation";
  scrollToBottom();
  fillScreen();
  return true;
}

function setComposerEnabled(enabled) {
  for (const id of ["message-input", "send-button"]) $(id).disabled = !enabled;
  // Files are not encrypted: an encrypted room takes none.
  $("file-input").disabled = !enabled || Boolean(state.room?.encrypted);
}

/** A member's display name for the call panel (their id when unknown). */
function memberName(userId) {
  if (userId === state.me?.id) return "you";
  const member = state.room?.participants?.find((p) => p.id === userId);
  return member ? userName(member) : userId;
}

function closeRoom() {
  stopTyping();
  state.calls?.close();
  state.socket?.stop();
  state.observer?.disconnect();
  for (const typing of state.typing.values()) clearTimeout(typing.timer);
  clearTimeout(state.readTimer);
  $("open-room-lock").hidden = true;
  Object.assign(state, {
    calls: null, socket: null, observer: null, roomId: null, room: null, oldestId: null, hasOlder: false,
    replyTo: null, editing: null, messages: new Map(), elements: new Map(), pending: new Map(), typing: new Map(),
    resume: null, caughtUp: false, liveNewest: null, catchUpGen: state.catchUpGen + 1, catchingUp: false,
    readQueue: new Set(), readTimer: null,
  });
  // The history's head item stays: it belongs to the list, not to a room.
  $("message-list").replaceChildren($("load-older-state"));
  $("load-older-state").textContent = "";
  delete $("message-list").dataset.roomId;
  $("typing-indicator").textContent = "";
  // A draft or an edit belongs to the room it was typed in.
  setComposerMode("send");
  $("message-input").value = "";
  clearFile();
  setComposerEnabled(false);
  $("open-room-name").textContent = "No room open";
  $("open-room-members").textContent = "";
}

/** Closes the open room for good (removed from it, or it is gone): back to the room list. */
function leaveRoom(text) {
  if (!state.roomId) return;
  closeRoom();
  showError(text);
  document.body.classList.remove("room-open");
  if (state.api) {
    setConnection("connected");
    loadRooms().catch(roomsFailed);
  }
}

async function joinRoom(roomId) {
  try {
    await state.api.join(roomId);
    await loadRooms();
    $("public-rooms").querySelector(`[data-room-id="${roomId}"]`)?.remove();
    await openRoom(roomId);
  } catch (error) {
    showError(error.message);
  }
}

async function showPublicRooms() {
  const section = $("public-rooms-section");
  const button = $("discover-button");
  if (!section.hidden) {
    section.hidden = true;
    button.setAttribute("aria-expanded", "false");
    return;
  }
  try {
    const rooms = await state.api.publicRooms();
    $("public-rooms").replaceChildren(...rooms.map(publicRoomItem));
    if (!rooms.length) $("public-rooms").append(el("li", { class: "empty", text: "No public rooms to join." }));
    section.hidden = false;
    button.setAttribute("aria-expanded", "true");
  } catch (error) {
    showError(error.message);
  }
}

function socketEnded(code) {
  if (code === 4401) {
    showError("Your token expired: sign in again.");
    signOut();
  } else {
    leaveRoom("You are no longer a member of this room.");
  }
}

// MARK: messages

/** Adds or updates a message of the open room; `live` when it came as an event. */
function upsertMessage(message, live) {
  if (message.room && message.room !== state.roomId) return;
  const pending = message.client_msg_id && message.sender?.id === state.me.id ? state.pending.get(message.client_msg_id) : null;
  if (pending) {
    state.pending.delete(message.client_msg_id);
    pending.element.remove();
  }
  const held = state.messages.get(message.id);
  // A late answer (a REST reply overtaken by an event) does not undo a newer edit or a delete.
  if (held && older(message, held)) return;
  const list = $("message-list");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const known = Boolean(held);
  state.messages.set(message.id, message);
  const element = render(message, "sent");
  if (known) {
    replaceKeepingFocus(state.elements.get(message.id), element, message.id);
  } else {
    insertInOrder(element, message);
    if (live && message.sender?.id !== state.me.id) announce(message);
  }
  state.elements.set(message.id, element);
  if (!state.oldestId || before(message, state.messages.get(state.oldestId))) state.oldestId = message.id;
  if ((live || pending) && nearBottom) scrollToBottom();
}

function before(a, b) {
  return a.timestamp < b.timestamp || (a.timestamp === b.timestamp && a.id < b.id);
}

/** The newer of two messages (either may be missing). */
function newer(a, b) {
  if (!a || !b) return a || b || null;
  return before(a, b) ? b : a;
}

/** Whether `incoming` is an older state of `held`: not deleted where it is, or an earlier edit. */
function older(incoming, held) {
  if (held.is_deleted && !incoming.is_deleted) return true;
  return Boolean(held.edited_at && (!incoming.edited_at || incoming.edited_at < held.edited_at));
}

/** Swaps a message's element, keeping keyboard focus on the same control (or the message) in the new one. */
function replaceKeepingFocus(old, element, id) {
  const active = document.activeElement;
  old.replaceWith(element);
  if (state.reactFor?.id === id) state.reactFor.opener = element.querySelector("button.react") ?? element;
  if (!active || !old.contains(active)) return;
  let target = element;
  if (active !== old) {
    const cls = [...active.classList][0];
    const emoji = active.dataset.emoji;
    const selector = cls ? `.${cls}${emoji ? `[data-emoji="${CSS.escape(emoji)}"]` : ""}` : null;
    target = (selector && element.querySelector(selector)) || element;
  }
  target.focus({ preventScroll: true });
}

/** After the last known message not newer than it; pending ones stay last. */
function insertInOrder(element, message) {
  const list = $("message-list");
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    const other = state.messages.get(node.dataset.messageId);
    if (other && !before(message, other)) {
      node.after(element);
      return;
    }
  }
  // First of the messages: after the history's head item (Loading… / Start of the conversation).
  $("load-older-state").after(element);
}

function render(message, status) {
  const element = messageItem(shown(message), { myId: state.me.id, status, lookup: (id) => shown(state.messages.get(id)) });
  const image = element.querySelector("img.preview");
  if (image) loadPreview(image, message.file_attachment);
  if (message.id && message.sender?.id !== state.me.id && !message.is_deleted && !state.readSent.has(message.id)
      && !(message.read_by || []).some((user) => user.id === state.me.id)) {
    state.observer?.observe(element);
  }
  return element;
}

/**
 * A message as it is shown: an encrypted one with its text opened by this
 * device (`message` itself is left as the server sent it). Opening is
 * asynchronous: the message is shown again when it is done.
 */
function shown(message) {
  if (!message || message.message_type !== "encrypted" || message.is_deleted) return message;
  const ciphertext = message.ciphertext;
  // `unreadable`: a placeholder, not the text (an edit starts empty rather than from it).
  if (!ciphertext || !state.device) return { ...message, content: "(encrypted for another device)", unreadable: true };
  const opened = state.plaintexts.get(ciphertext);
  if (typeof opened === "string") return { ...message, content: opened };
  if (opened === undefined) {
    state.plaintexts.set(ciphertext, null);
    const device = state.device;
    // Opened: the text; false when it cannot be (not this device's keys, or altered).
    device.open(ciphertext).catch(() => false).then((text) => {
      if (state.device !== device) return;
      state.plaintexts.set(ciphertext, text);
      const held = state.messages.get(message.id);
      if (held?.ciphertext === ciphertext) upsertMessage(held, false);
      // Replies quote it: shown again with its text.
      for (const other of state.messages.values()) if (other.reply_to === message.id) upsertMessage(other, false);
    });
  }
  return { ...message, content: opened === false ? "(cannot be decrypted on this device)" : "(decrypting…)", unreadable: true };
}

async function loadPreview(image, url) {
  // A preview that grows the list keeps a reader who was at the bottom there.
  const list = $("message-list");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  image.addEventListener("load", () => { if (nearBottom) scrollToBottom(); }, { once: true });
  try {
    if (!state.previews.has(url)) state.previews.set(url, URL.createObjectURL(await state.api.download(url)));
    image.src = state.previews.get(url);
  } catch {
    image.alt = "(preview unavailable)";
  }
}

async function downloadFile(link) {
  const url = link.closest(".attachment").dataset.url;
  try {
    const blob = await state.api.download(url);
    const a = el("a", { href: URL.createObjectURL(blob), download: link.textContent.replace(/ \([^)]*\)$/, "") });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (error) {
    showError(error.message);
  }
}

function announce(message) {
  $("live-region").textContent = `${userName(message.sender)}: ${message.file_name ? `(file ${message.file_name}) ` : ""}${shown(message).content}`;
}

function scrollToBottom() {
  const list = $("message-list");
  list.scrollTop = list.scrollHeight;
}

async function loadOlder() {
  if (!state.hasOlder || state.loadingOlder || !state.oldestId) return;
  const roomId = state.roomId;
  state.loadingOlder = true;
  $("load-older-state").textContent = "Loading…";
  const list = $("message-list");
  try {
    const page = await state.api.messages(roomId, { before: state.oldestId }, PAGE);
    if (state.roomId !== roomId) return;
    const height = list.scrollHeight;
    for (const message of page.results) upsertMessage(message, false);
    // Keep what the reader was looking at in place as older messages go in above it.
    list.scrollTop += list.scrollHeight - height;
    state.hasOlder = Boolean(page.next);
    list.dataset.hasOlder = String(state.hasOlder);
  } catch (error) {
    showError(error.message);
  } finally {
    state.loadingOlder = false;
    $("load-older-state").textContent = state.hasOlder ? "" : "Start of the conversation";
  }
  fillScreen();
}

/** Older pages until the list can scroll: on a tall screen the first page may not fill it. */
function fillScreen() {
  const list = $("message-list");
  if (state.hasOlder && !state.loadingOlder && list.scrollHeight <= list.clientHeight) loadOlder();
}

/**
 * After the socket opens (every time): every message after the resume point,
 * page by page (the protocol's resume). Socket events move the resume point
 * only once this is done, so a failed catch-up leaves it where the hole starts.
 */
async function catchUp() {
  const roomId = state.roomId;
  const generation = ++state.catchUpGen;
  Object.assign(state, { caughtUp: false, liveNewest: null, catchingUp: true });
  try {
    const after = state.resume ? `after=${state.resume.id}&` : "";
    let next = `/api/chat/rooms/${roomId}/messages/?${after}page_size=100`;
    const missed = [];
    for (let page = 0; next; page++) {
      if (page === CATCH_UP_PAGES) return await reloadNewest(roomId, generation);
      const answer = await state.api.get(next);
      if (state.roomId !== roomId || generation !== state.catchUpGen) return;
      missed.push(...answer.results);
      next = answer.next ? localPath(answer.next) : null;
    }
    for (const message of missed.reverse()) upsertMessage(message, true);
    Object.assign(state, { resume: newer(newer(state.resume, missed.at(-1)), state.liveNewest), caughtUp: true });
  } catch (error) {
    if (state.roomId !== roomId || generation !== state.catchUpGen) return;
    // The cursor message is gone (400): the newest page is the way back. Anything else: the next poll tries again.
    if (error instanceof ApiError && error.status === 400) await reloadNewest(roomId, generation).catch(() => {});
  } finally {
    if (generation === state.catchUpGen) state.catchingUp = false;
  }
}

/**
 * Too much was missed to read it all (or the cursor is gone): the list starts
 * again from the newest page, without a hole, and older ones load on scrolling up.
 */
async function reloadNewest(roomId, generation) {
  const page = await state.api.messages(roomId, {}, PAGE);
  if (state.roomId !== roomId || generation !== state.catchUpGen) return;
  for (const element of state.elements.values()) element.remove();
  Object.assign(state, { messages: new Map(), elements: new Map(), oldestId: null, resume: null });
  state.observer?.disconnect();
  state.observer = new IntersectionObserver(onVisible, { root: $("message-list"), threshold: 0.5 });
  for (const message of page.results.slice().reverse()) upsertMessage(message, false);
  state.hasOlder = Boolean(page.next);
  $("message-list").dataset.hasOlder = String(state.hasOlder);
  $("load-older-state").textContent = state.hasOlder ? "" : "Start of the conversation";
  scrollToBottom();
  showError("Older messages skipped — scroll up to read them.");
  // Events that came during the reload may be newer than the page: caught up only from the page on.
  state.resume = page.results[0] ?? null;
  state.catchingUp = false;
  if (state.socket?.isOpen()) catchUp();
}

/** Re-reads the newest page: others' receipts (never broadcast); and retries a catch-up that failed. */
async function refreshOpenRoom() {
  const roomId = state.roomId;
  if (!roomId || !state.api || document.hidden) return;
  state.refreshedAt = Date.now();
  if (!state.caughtUp && !state.catchingUp && state.socket?.isOpen()) catchUp();
  try {
    const page = await state.api.messages(roomId, {}, PAGE);
    if (state.roomId !== roomId) return;
    for (const message of page.results.slice().reverse()) {
      const known = state.messages.get(message.id);
      if (!known || JSON.stringify(known) !== JSON.stringify(message)) upsertMessage(message, !known);
    }
  } catch {
    // The socket's state says whether the server is reachable; the next round tries again.
  }
}

// MARK: read receipts

// Seen messages are queued and marked over REST, whose answer says the
// server took it (a socket `read_receipt` gets no answer when it succeeds),
// one request at a time and at most 10 a second (the socket's event limit is
// 20/s for everything). When the newest message is among them, one
// `rooms/{id}/mark_read/` marks the whole room, as the store does.

function onVisible(entries) {
  if (document.visibilityState !== "visible") return;
  for (const entry of entries) {
    const id = entry.target.dataset.messageId;
    if (!entry.isIntersecting || !id || state.readSent.has(id) || state.readQueue.has(id)) continue;
    state.readQueue.add(id);
    state.observer.unobserve(entry.target);
  }
  if (state.readQueue.size && !state.readSending) {
    clearTimeout(state.readTimer);
    state.readTimer = setTimeout(sendReceipts, 300);
  }
}

async function sendReceipts() {
  const roomId = state.roomId;
  if (!roomId || !state.api || state.readSending) return;
  state.readSending = true;
  try {
    while (state.roomId === roomId && state.readQueue.size) {
      const newest = [...state.messages.values()].filter((m) => m.sender?.id !== state.me.id && !m.is_deleted).reduce(newer, null);
      if (newest && state.readQueue.has(newest.id)) {
        await markRoomRead(roomId);
      } else {
        const id = state.readQueue.values().next().value;
        await markOneRead(roomId, id);
      }
      await new Promise((resolve) => setTimeout(resolve, RECEIPT_GAP_MS));
    }
  } finally {
    state.readSending = false;
  }
  rereadUnread(roomId);
  refreshRoomsSoon();
}

/**
 * The open room's badge from the server once its receipts are accepted, not
 * at the next rooms poll (30 s): the reader has just read what it counted.
 */
async function rereadUnread(roomId) {
  let fresh;
  try {
    fresh = await state.api.room(roomId);
  } catch {
    return; // The rooms poll brings it later.
  }
  setUnread(roomId, fresh.unread_count || 0);
}

function setUnread(roomId, count) {
  const room = state.rooms.get(roomId);
  if (!room || room.unread_count === count) return;
  room.unread_count = count;
  renderRooms();
}

async function markRoomRead(roomId) {
  const queued = [...state.readQueue];
  try {
    await state.api.markRoomRead(roomId);
  } catch {
    return receiptsFailed(roomId, queued);
  }
  // Everything up to the newest is marked: nothing is unread until the next message.
  setUnread(roomId, 0);
  if (state.roomId !== roomId) return;
  for (const [id, message] of state.messages) {
    if (message.sender?.id === state.me.id) continue;
    state.readSent.add(id);
    state.readQueue.delete(id);
    const element = state.elements.get(id);
    if (element) state.observer?.unobserve(element);
  }
}

async function markOneRead(roomId, id) {
  try {
    await state.api.markRead(roomId, id);
    state.readSent.add(id);
    state.readQueue.delete(id);
  } catch (error) {
    // Gone or deleted: nothing to mark.
    if (error.status === 404) state.readQueue.delete(id);
    else receiptsFailed(roomId, [id]);
  }
}

/** Not marked: seen again later (or on the next visit), they are tried again. */
function receiptsFailed(roomId, ids) {
  for (const id of ids) state.readQueue.delete(id);
  // Not at once: a visible message would be queued again at once, a request loop while the server is away.
  setTimeout(() => {
    if (state.roomId !== roomId) return;
    for (const id of ids) {
      const element = state.elements.get(id);
      if (element && !state.readSent.has(id)) state.observer?.observe(element);
    }
  }, 5000);
}

// MARK: socket events

function onSocketEvent(event) {
  switch (event.type) {
    case "message":
      upsertMessage(event.message, true);
      noteLastMessage(event.message);
      if (event.message.room && event.message.room !== state.roomId) break;
      if (state.caughtUp) state.resume = newer(state.resume, event.message);
      else state.liveNewest = newer(state.liveNewest, event.message);
      refreshRoomsSoon();
      break;
    case "message_edited":
    case "message_deleted":
      if (state.messages.has(event.message.id)) upsertMessage(event.message, false);
      break;
    case "reaction": {
      const message = state.messages.get(event.message_id);
      if (message) upsertMessage({ ...message, reactions: event.reactions }, false);
      break;
    }
    case "typing":
      if (event.user_id !== state.me.id) setTyping(event.user_id, event.user, event.is_typing);
      break;
    case "user_joined":
      refreshRoomsSoon();
      if (!state.room?.participants?.some((p) => p.id === event.user_id)) refreshRoomInfo();
      break;
    case "call_started":
    case "call_joined":
    case "call_left":
    case "call_ended":
      state.calls?.onEvent(event);
      break;
    case "call_signal":
      state.calls?.onSignal(event);
      break;
    case "error":
      showError(event.error);
      break;
    default:
      break;
  }
}

function noteLastMessage(message) {
  const room = state.rooms.get(message.room);
  if (!room) return;
  room.last_message = { id: message.id, content: message.content, sender: message.sender, timestamp: message.timestamp };
  state.rooms.delete(room.id);
  state.rooms = new Map([[room.id, room], ...state.rooms]);
  renderRooms();
}

async function refreshRoomInfo() {
  const roomId = state.roomId;
  let room;
  try {
    room = await state.api.room(roomId);
  } catch (error) {
    // Only these say the room is not ours any more; anything else is tried again with the next event.
    if (state.roomId === roomId && (error.status === 403 || error.status === 404)) leaveRoom("You are no longer a member of this room.");
    return;
  }
  if (state.roomId !== roomId) return;
  state.room = room;
  $("open-room-members").textContent = `${room.participants?.length ?? 0} members`;
}

function setTyping(userId, email, isTyping) {
  clearTimeout(state.typing.get(userId)?.timer);
  if (isTyping) {
    const member = state.room?.participants?.find((p) => p.id === userId);
    const name = member ? userName(member) : (email || "Someone");
    state.typing.set(userId, { name, timer: setTimeout(() => setTyping(userId, email, false), TYPING_SHOW_MS) });
  } else {
    state.typing.delete(userId);
  }
  const names = [...state.typing.values()].map((t) => t.name);
  $("typing-indicator").textContent = names.length === 0 ? ""
    : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

function typed() {
  if (!state.socket || state.editing) return;
  const now = Date.now();
  if ($("message-input").value.trim() && now - state.typingSentAt > TYPING_RESEND_MS) {
    if (state.socket.send({ type: "typing", is_typing: true })) state.typingSentAt = now;
  }
  clearTimeout(state.typingStop);
  state.typingStop = setTimeout(stopTyping, TYPING_STOP_MS);
}

function stopTyping() {
  clearTimeout(state.typingStop);
  if (state.typingSentAt) state.socket?.send({ type: "typing", is_typing: false });
  state.typingSentAt = 0;
}

// MARK: sending

function newClientId() {
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function submitComposer(event) {
  event.preventDefault();
  const input = $("message-input");
  const content = input.value;
  if (state.editing) return saveEdit(content);
  const file = $("file-input").files[0];
  if (!content.trim() && !file) return;
  stopTyping();
  const pending = {
    roomId: state.roomId, file,
    body: { content, client_msg_id: newClientId(), reply_to: state.replyTo || undefined },
  };
  if (!file) pending.body.message_type = "text";
  if (state.room?.encrypted) {
    // Sealed as it is sent (send), for the devices the members have then.
    pending.plaintext = content;
    pending.body = { message_type: "encrypted", client_msg_id: pending.body.client_msg_id, reply_to: pending.body.reply_to };
  }
  input.value = "";
  clearFile();
  setComposerMode("send");
  await send(pending);
}

async function send(pending) {
  const draft = {
    client_msg_id: pending.body.client_msg_id, sender: state.me,
    content: pending.plaintext ?? (pending.body.content || (pending.file ? `📎 ${pending.file.name}` : "")),
    reply_to: pending.body.reply_to, timestamp: new Date().toISOString(), reactions: {}, read_by: [],
    file_name: pending.file?.name,
  };
  pending.element?.remove();
  pending.element = render(draft, "pending");
  state.pending.set(draft.client_msg_id, pending);
  $("message-list").append(pending.element);
  scrollToBottom();
  try {
    // Sealed in the queue: a short message sealed sooner must not overtake a longer one typed before it.
    const message = pending.file ? await upload(pending) : await inOrder(async () => {
      if (pending.plaintext !== undefined) pending.body.ciphertexts = await sealed(pending.roomId, pending.plaintext);
      return withOwnCiphertext(await state.api.sendMessage(pending.roomId, pending.body), pending.body.ciphertexts);
    });
    state.sentAt = Date.now();
    if (state.roomId === pending.roomId) upsertMessage(message, false);
  } catch (error) {
    if (state.pending.get(draft.client_msg_id) !== pending) return;
    showError(`Not sent: ${error.message}`);
    const failed = render(draft, "failed");
    pending.element.replaceWith(failed);
    pending.element = failed;
    failed.scrollIntoView({ block: "nearest" });
  }
}

/**
 * `text` sealed for the devices of the room's members as they are now
 * (the room is read again: someone may have joined or left since it was
 * opened, or since a failed send).
 */
async function sealed(roomId, text) {
  if (!state.device) throw new Error("this browser has no device keys (encrypted rooms need Web Crypto's X25519)");
  const room = await state.api.room(roomId);
  const ciphertexts = await sealForRoom(state.api, state.device, room, text);
  // This device's own copy needs no opening.
  const own = ciphertexts[state.device.id];
  if (own) state.plaintexts.set(own, text);
  return ciphertexts;
}

/** A send's or edit's answer, with this device's ciphertext (the answer carries none of the new one). */
function withOwnCiphertext(message, ciphertexts) {
  const own = ciphertexts && state.device ? ciphertexts[state.device.id] : undefined;
  return own ? { ...message, ciphertext: own } : message;
}

// Text messages are posted one after another: parallel requests may take
// different connections and reach the server in another order than typed.
let sendChain = Promise.resolve();
function inOrder(task) {
  const run = sendChain.then(task, task);
  sendChain = run.catch(() => {});
  return run;
}

// Uploads go one at a time too (beside the text queue), so the one progress bar is one upload's.
let uploadChain = Promise.resolve();
function upload(pending) {
  const run = uploadChain.then(() => uploadNow(pending), () => uploadNow(pending));
  uploadChain = run.catch(() => {});
  return run;
}

async function uploadNow(pending) {
  const progress = $("upload-progress");
  progress.hidden = false;
  progress.value = 0;
  const type = pending.file.type.startsWith("image/") ? "image" : "file";
  try {
    return await state.api.upload(pending.roomId, { ...pending.body, message_type: type }, pending.file, (fraction) => {
      progress.value = Math.round(fraction * 100);
    });
  } finally {
    // Done or failed, the bar goes: the message's status (sent, or failed with Retry) says which.
    progress.hidden = true;
    progress.value = 0;
  }
}

function retry(element) {
  const pending = state.pending.get(element.dataset.clientMsgId);
  if (pending) send(pending);
}

async function saveEdit(content) {
  const id = state.editing;
  if (!content.trim()) return;
  try {
    const roomId = state.roomId;
    const change = state.room?.encrypted ? { ciphertexts: await sealed(roomId, content) } : { content };
    const message = withOwnCiphertext(await state.api.editMessage(roomId, id, change), change.ciphertexts);
    upsertMessage(message, false);
    $("message-input").value = "";
    setComposerMode("send");
  } catch (error) {
    showError(error.message);
  }
}

function setComposerMode(mode, id = null) {
  state.replyTo = mode === "reply" ? id : null;
  state.editing = mode === "edit" ? id : null;
  $("composer").dataset.mode = mode;
  $("send-button").textContent = mode === "edit" ? "Save" : "Send";
  const preview = $("reply-preview");
  preview.hidden = mode === "send";
  const message = id ? state.messages.get(id) : null;
  $("reply-preview-text").textContent = mode === "reply" ? `Replying to ${userName(message?.sender)}: ${shown(message)?.content ?? ""}`
    : mode === "edit" ? "Editing your message" : "";
  if (mode === "edit") {
    const text = shown(message);
    $("message-input").value = text && !text.unreadable ? text.content : "";
  }
  if (mode !== "send") $("message-input").focus();
}

function clearFile() {
  $("file-input").value = "";
  $("file-name").textContent = "";
}

async function react(id, emoji, action) {
  try {
    const answer = await state.api.react(state.roomId, id, emoji, action);
    const message = state.messages.get(id);
    if (message) upsertMessage({ ...message, reactions: answer.reactions }, false);
  } catch (error) {
    showError(error.message);
  }
}

async function deleteMessage(id) {
  try {
    await state.api.deleteMessage(state.roomId, id);
    const message = state.messages.get(id);
    if (message) upsertMessage({ ...message, is_deleted: true, content: "" }, false);
  } catch (error) {
    showError(error.message);
  }
}

function onMessageClick(event) {
  const element = event.target.closest(".message");
  if (!element) return;
  const id = element.dataset.messageId;
  const button = event.target.closest("button, a");
  if (!button) return;
  if (button.classList.contains("retry")) retry(element);
  else if (button.classList.contains("reply")) setComposerMode("reply", id);
  else if (button.classList.contains("edit")) setComposerMode("edit", id);
  else if (button.classList.contains("delete")) deleteMessage(id);
  else if (button.classList.contains("react")) openPicker(id, button);
  else if (button.classList.contains("reaction")) {
    react(id, button.dataset.emoji, button.getAttribute("aria-pressed") === "true" ? "remove" : "add");
  } else if (button.classList.contains("file-link")) {
    event.preventDefault();
    downloadFile(button);
  }
}

function openPicker(id, opener) {
  state.reactFor = { id, opener };
  $("reaction-picker").showModal();
}

// MARK: search

async function search(event) {
  event.preventDefault();
  const filters = {
    q: $("search-input").value.trim(), room: $("search-room").value, sender: $("search-sender").value.trim(),
    after: dayBound($("search-after").value, false), before: dayBound($("search-before").value, true),
  };
  const results = $("search-results");
  try {
    const found = await state.api.searchMessages(filters);
    results.replaceChildren(...found.map((message) => searchItem(message, state.rooms, state.me.id)));
    if (!found.length) results.append(el("li", { class: "empty", text: "No messages found." }));
  } catch (error) {
    results.replaceChildren(el("li", { class: "empty", text: error.message }));
  }
}

/** A date field's local day as an instant: its first millisecond, or with `end` its last. */
function dayBound(value, end) {
  if (!value) return "";
  const [year, month, day] = value.split("-").map(Number);
  const date = end ? new Date(year, month - 1, day, 23, 59, 59, 999) : new Date(year, month - 1, day);
  return date.toISOString();
}

async function openSearchResult(item) {
  const messageId = item.dataset.messageId;
  if (state.roomId !== item.dataset.roomId) await openRoom(item.dataset.roomId);
  const element = state.elements.get(messageId);
  if (element) {
    element.classList.add("highlight");
    element.scrollIntoView({ block: "center" });
    element.focus();
  }
}

// MARK: wiring

function bind() {
  $("signin").addEventListener("submit", (event) => { event.preventDefault(); signIn($("token-input").value); });
  $("signout-button").addEventListener("click", () => signOut({ forget: true }));
  $("call-audio-button").addEventListener("click", () => state.calls?.start("audio"));
  $("call-video-button").addEventListener("click", () => state.calls?.start("video"));
  $("call-join").addEventListener("click", () => state.calls?.join());
  $("call-decline").addEventListener("click", () => state.calls?.decline());
  $("call-leave").addEventListener("click", () => state.calls?.leave());
  $("error-banner").addEventListener("click", () => { $("error-banner").textContent = ""; });
  $("room-list").addEventListener("click", (event) => {
    const item = event.target.closest("[data-room-id]");
    if (item && item.dataset.roomId !== state.roomId) openRoom(item.dataset.roomId);
    else if (item) document.body.classList.add("room-open");
  });
  $("public-rooms").addEventListener("click", (event) => {
    const item = event.target.closest("[data-room-id]");
    if (item && event.target.closest("button.join")) joinRoom(item.dataset.roomId);
  });
  $("discover-button").addEventListener("click", showPublicRooms);
  $("back-button").addEventListener("click", () => document.body.classList.remove("room-open"));
  bindNewRoom();
  $("direct-form").addEventListener("submit", directMessage);
  $("message-list").addEventListener("click", onMessageClick);
  $("message-list").addEventListener("scroll", () => { if ($("message-list").scrollTop < 80) loadOlder(); });
  $("composer").addEventListener("submit", submitComposer);
  $("message-input").addEventListener("input", typed);
  $("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("file-input").addEventListener("change", () => { $("file-name").textContent = $("file-input").files[0]?.name ?? ""; });
  $("cancel-reply").addEventListener("click", () => { setComposerMode("send"); $("message-input").value = ""; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.replyTo) setComposerMode("send");
    else if (event.key === "Escape" && state.editing) { setComposerMode("send"); $("message-input").value = ""; }
  });
  bindPicker();
  $("search-form").addEventListener("submit", search);
  $("search-results").addEventListener("click", (event) => {
    const item = event.target.closest("[data-message-id]");
    if (item) openSearchResult(item);
  });
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refreshOpenRoom(); });
  window.addEventListener("pagehide", () => state.calls?.leaveOnUnload());
}

function bindNewRoom() {
  const dialog = $("new-room-dialog");
  $("new-room-button").addEventListener("click", () => {
    $("new-room-error").textContent = "";
    dialog.showModal();
    $("new-room-name").focus();
  });
  $("new-room-cancel").addEventListener("click", () => dialog.close());
  $("new-room-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const members = $("new-room-members").value.split(/[\s,]+/).filter(Boolean);
    try {
      const room = await state.api.createRoom($("new-room-name").value, $("new-room-type").value, members, $("new-room-encrypted").checked);
      dialog.close();
      $("new-room-form").reset();
      await loadRooms();
      await openRoom(room.id);
    } catch (error) {
      $("new-room-error").textContent = error.message;
    }
  });
}

function bindPicker() {
  const picker = $("reaction-picker");
  $("reaction-choices").replaceChildren(...REACTIONS.map((emoji) =>
    el("button", { type: "button", "data-emoji": emoji, "aria-label": `React with ${emoji}`, text: emoji })));
  $("reaction-choices").addEventListener("click", (event) => {
    const button = event.target.closest("[data-emoji]");
    if (!button || !state.reactFor) return;
    picker.close();
    react(state.reactFor.id, button.dataset.emoji, "add");
  });
  $("reaction-cancel").addEventListener("click", () => picker.close());
  picker.addEventListener("close", () => { state.reactFor?.opener?.focus(); state.reactFor = null; });
}

async function directMessage(event) {
  event.preventDefault();
  try {
    const room = await state.api.directMessage($("new-direct-user").value.trim());
    $("new-direct-user").value = "";
    await loadRooms();
    await openRoom(room.id);
  } catch (error) {
    showError(error.message);
  }
}

bind();
const saved = localStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
