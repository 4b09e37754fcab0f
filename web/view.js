// DOM builders for rooms and messages; the ids, classes and data attributes
// are the contract in docs/webclient.md (browser tests rely on them).

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "type" || key === "title") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function userName(user) {
  if (!user) return "someone";
  return user.display_name || user.email || user.id;
}

export function roomName(room, myId) {
  if (room.name) return room.name;
  if (room.room_type === "direct") {
    const other = room.other_user || room.participants?.find((p) => p.id !== myId);
    return other ? userName(other) : "Direct message";
  }
  return "(unnamed room)";
}

function shortTime(timestamp) {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** One entry of #room-list. */
export function roomItem(room, myId, isOpen) {
  const unread = room.unread_count || 0;
  const last = room.last_message;
  // An encrypted room's messages have no content for the server to show.
  const empty = room.encrypted ? "(encrypted)" : "(attachment)";
  const lastText = last ? `${userName(last.sender)}: ${last.content || empty}` : "No messages yet";
  return el("li", { class: "room", "data-room-id": room.id, "aria-current": isOpen ? "true" : false },
    el("button", { type: "button", class: "room-open", "aria-label": `${roomName(room, myId)}${unread ? `, ${unread} unread` : ""}` },
      el("span", { class: "room-name", text: roomName(room, myId) }),
      el("span", { class: "room-type", text: room.room_type }),
      el("span", { class: "unread-count", text: unread ? String(unread) : "", hidden: !unread }),
      el("span", { class: "last-message", text: lastText })));
}

/** One entry of #public-rooms. */
export function publicRoomItem(room) {
  const members = room.participants?.length ?? 0;
  return el("li", { "data-room-id": room.id },
    el("span", { class: "room-name", text: room.name || "(unnamed room)" }),
    el("span", { class: "room-members", text: `${members} member${members === 1 ? "" : "s"}` }),
    el("button", { type: "button", class: "join", "aria-label": `Join ${room.name || "room"}`, text: "Join" }));
}

const IMAGE_NAME = /\.(png|jpe?g|gif|webp|avif|bmp)$/i;

export function isImage(message) {
  return message.message_type === "image" || (message.file_attachment && IMAGE_NAME.test(message.file_name || ""));
}

/**
 * A `.message` element for a message (a server object, or a pending one with
 * `client_msg_id` and `status`). `lookup(id)` finds a loaded message for the
 * reply preview; `myId` decides which buttons it has.
 */
export function messageItem(message, { myId, status, lookup }) {
  const mine = message.sender?.id === myId;
  const item = el("li", {
    class: `message${mine ? " mine" : ""}`,
    "data-message-id": message.id || false,
    "data-client-msg-id": message.client_msg_id || false,
    "data-status": status,
    "data-sender-id": message.sender?.id,
    "data-deleted": message.is_deleted ? "true" : false,
    "data-encrypted": message.message_type === "encrypted" ? "true" : false,
    tabIndex: -1,
  });
  const head = el("div", { class: "message-head" },
    el("span", { class: "sender", text: userName(message.sender) }),
    el("time", { class: "time", dateTime: message.timestamp || "", text: message.timestamp ? shortTime(message.timestamp) : "" }));
  if (message.is_edited && !message.is_deleted) head.append(el("span", { class: "edited", text: "(edited)" }));
  if (status === "pending") head.append(el("span", { class: "status-text", text: "sending…" }));
  if (status === "failed") head.append(el("span", { class: "status-text failed", text: "not sent" }));
  item.append(head);
  if (message.reply_to) {
    const original = lookup(message.reply_to);
    const text = original ? `${userName(original.sender)}: ${original.is_deleted ? "(deleted)" : original.content}` : "an earlier message";
    item.append(el("div", { class: "reply-to", "data-reply-to": message.reply_to, text: `↪ ${text}` }));
  }
  item.append(el("div", { class: "content", text: message.is_deleted ? "(message deleted)" : message.content }));
  if (message.file_attachment && !message.is_deleted) {
    const attachment = el("div", { class: "attachment", "data-url": message.file_attachment });
    if (isImage(message)) attachment.append(el("img", { class: "preview", alt: message.file_name || "image" }));
    attachment.append(el("a", { class: "file-link", href: "#", text: `${message.file_name || "file"} (${formatSize(message.file_size)})` }));
    item.append(attachment);
  }
  item.append(reactionsBox(message, myId));
  item.append(readBy(message));
  item.append(actions(message, mine, status));
  return item;
}

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function reactionsBox(message, myId) {
  const box = el("div", { class: "reactions" });
  for (const [emoji, users] of Object.entries(message.reactions || {})) {
    const pressed = users.includes(myId);
    box.append(el("button", {
      type: "button", class: "reaction", "data-emoji": emoji, "aria-pressed": pressed ? "true" : "false",
      "aria-label": `${emoji} ${users.length}${pressed ? ", yours: click to remove" : ""}`, text: `${emoji} ${users.length}`,
    }));
  }
  return box;
}

export function readBy(message) {
  const readers = (message.read_by || []).filter((user) => user.id !== message.sender?.id);
  const names = readers.map(userName);
  return el("div", {
    class: "read-by",
    "data-read-by": readers.map((user) => user.id).join(","),
    text: names.length ? `Read by ${names.join(", ")}` : "",
    hidden: !names.length,
  });
}

function actions(message, mine, status) {
  const box = el("div", { class: "message-actions" });
  if (status === "failed") box.append(el("button", { type: "button", class: "retry", text: "Retry" }));
  if (message.is_deleted || !message.id) return box;
  box.append(el("button", { type: "button", class: "reply", text: "Reply", "aria-label": "Reply to this message" }));
  box.append(el("button", { type: "button", class: "react", text: "React", "aria-label": "Add a reaction", "aria-haspopup": "dialog" }));
  if (mine) {
    box.append(el("button", { type: "button", class: "edit", text: "Edit", "aria-label": "Edit this message" }));
    box.append(el("button", { type: "button", class: "delete", text: "Delete", "aria-label": "Delete this message" }));
  }
  return box;
}

/** One entry of #search-results. */
export function searchItem(message, rooms, myId) {
  const room = rooms.get(message.room);
  return el("li", { "data-message-id": message.id, "data-room-id": message.room },
    el("button", { type: "button", class: "search-open" },
      el("span", { class: "search-room", text: room ? roomName(room, myId) : "room" }),
      el("span", { class: "sender", text: userName(message.sender) }),
      el("span", { class: "content", text: message.content })));
}
