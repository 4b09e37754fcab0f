import ChatBus
import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import Foundation
import Logging
import Metrics

/// The `store` role: rooms, participants, messages, users. One worker per
/// shard; all writes of a room arrive at the same shard, in order.
public final class StoreWorker {
    /// Messages this process stored (not a resend's or duplicate's repeat).
    static let messagesStored = Counter(label: "chatd_messages_stored_total")

    let processor: BatchProcessor
    let config: ChatConfig
    /// Messages this process stored and published, most recent last (bounded).
    /// A resend of one of them is only a lost reply: its event went out, and
    /// publishing it again would reach clients twice once it is older than a
    /// frontend's dedupe window. A resend of a message a previous worker
    /// stored is published again: that worker may have died before it could.
    /// Kept as 16-byte UUIDs, not strings: at the bound, 200,000 heap-allocated
    /// id strings with their set and list were ~25 MB of a store worker's
    /// memory after a burst; as UUIDs they are ~7 MB.
    var publishedHere = Set<UUID>()
    var publishedOrder: [UUID] = []
    static let publishedMemory = 200_000
    /// What the running batch's transaction stored and publishes: kept here
    /// until it commits, and dropped when it starts over (PostgreSQL reruns a
    /// transaction it aborted in a deadlock), so a rolled-back attempt
    /// neither counts a message nor makes its rerun's event look published.
    var pendingPublished = Set<UUID>()
    var pendingStored = 0
    /// Encoded room lists and message pages while nothing is written.
    let pages = ReadCache()
    /// The rooms with webhooks (issue 16): what the write path looks up to write the outbox.
    let webhookCache = WebhookCache()
    /// Which rooms are encrypted (issue 17): what the message path asks.
    let encryptedRooms = EncryptedRoomCache()

    public init(database: any StoreEngine, config: ChatConfig, logger: Logger) {
        _ = Self.messagesStored  // its series shows from the start, at 0
        self.processor = BatchProcessor(database: database, logger: logger)
        self.config = config
    }

    static func isWrite(_ kind: CommandKind) -> Bool {
        switch kind {
        case .roomList, .roomGet, .messageList, .messageGet, .memberList, .pinList, .mentionList, .userMe, .userSearch, .userBlocked,
            .callGet, .callList, .callSignal, .callDue: false
        default: true
        }
    }

    /// Turns a batch of commands into the events to publish, in order.
    public func handle(_ batch: [Command]) -> [Event] {
        processor.handle(
            batch, isWrite: Self.isWrite, write: write, read: read,
            inTransaction: { db in
                self.pendingPublished.removeAll()
                self.pendingStored = 0
                try self.webhookCache.refreshIfDue(db)
            },
            afterCommit: {
                for id in self.pendingPublished { self.remember(id) }
                if self.pendingStored > 0 { Self.messagesStored.increment(by: Int64(self.pendingStored)) }
                self.pendingPublished.removeAll()
                self.pendingStored = 0
            })
    }

    func body<T: Decodable>(_ type: T.Type, _ command: Command) throws -> T {
        try processor.body(type, command)
    }

    func write(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        let user = identity.id
        switch command.kind {
        case .messageCreate:
            // The frontend's body for a WebSocket message reads without JSONDecoder.
            let request = try FlatJSON.object(command.body).flatMap(Requests.MessageCreate.init(flat:))
                ?? body(Requests.MessageCreate.self, command)
            return try storeMessage(request, sender: identity.user, command: command, in: db)
        case .messageUpdate:
            let request = try body(Requests.MessageUpdate.self, command)
            // An edit that repeats the last one (a resend, after a slow batch or a
            // replaced worker) writes no second delivery, whose new id the
            // receiver could not tell from a new edit; the extra read only where a
            // webhook wants edits.
            let watched = try !webhookCache.subscribers(room: request.roomID, event: "message_edited", in: db).isEmpty
            let repeated = try watched && (db.messages(ids: [request.messageID]).first.map {
                $0.roomID == request.roomID && $0.editedAt != nil && $0.content == request.content
            } ?? false)
            let message = try db.editMessage(request, user: user, maxChars: config.maxMessageChars)
            if !repeated { try outbox(room: message.roomID, event: "message_edited", in: db) { ClientJSON.encode(message) } }
            if message.messageType == .encrypted {
                // New ciphertexts, each to its own device (the sender's blockers' excepted).
                guard let ciphertexts = request.ciphertexts else {
                    throw StoreError.badRequest([("ciphertexts", "An edit of an encrypted message carries new ciphertexts.")])
                }
                let entries = try db.storeCiphertexts(message: message.id, room: message.roomID, ciphertexts)
                var hidden = message
                hidden.hiddenFrom = try db.blockers(of: message.sender.id, room: message.roomID)
                return Self.deviceEvents(hidden, entries, type: "message_edited") + [.reply(to: command, status: .ok, body: ClientJSON.encode(message))]
            }
            guard request.ciphertexts == nil else { throw StoreError.badRequest([("ciphertexts", "Only an encrypted message carries ciphertexts.")]) }
            // Edits and deletions of a blocked sender's messages are hidden like the messages
            // (one index probe; not on the path of new messages).
            return [
                Event.room(message.roomID, key: .message(id: message.id, change: .edited(at: message.editedAt?.micros ?? 0)),
                           hiddenFrom: try db.blockers(of: message.sender.id, room: message.roomID), body: ClientJSON.messageChange("message_edited", message)),
                .reply(to: command, status: .ok, body: ClientJSON.encode(message)),
            ]
        case .messageDelete:
            let ref = try body(Requests.MessageRef.self, command)
            // A repeated deletion (or a resend) changes nothing and writes no second delivery;
            // the extra read only where a webhook wants deletions.
            let watched = try !webhookCache.subscribers(room: ref.roomID, event: "message_deleted", in: db).isEmpty
            let wasDeleted = try watched && (db.messages(ids: [ref.messageID]).first?.isDeleted ?? false)
            let message = try db.deleteMessage(ref, user: user)
            // Its ciphertexts go with its content (an encrypted room's).
            if message.messageType == .encrypted { try db.dropCiphertexts(message: message.id) }
            if !wasDeleted { try outbox(room: message.roomID, event: "message_deleted", in: db) { ClientJSON.encode(message) } }
            return [
                Event.room(message.roomID, key: .message(id: message.id, change: .deleted), hiddenFrom: try db.blockers(of: message.sender.id, room: message.roomID),
                           body: ClientJSON.messageChange("message_deleted", message)),
                .reply(to: command, status: .noContent, body: []),
            ]
        case .messageReact:
            let request = try body(Requests.MessageReact.self, command)
            let message = try db.react(request, user: user)
            return [
                Event.room(message.roomID,
                           body: ClientJSON.reactionEvent(message, user: user, emoji: request.emoji, added: request.add)),
                .reply(to: command, status: .ok, body: ClientJSON.reactionAnswer(message, added: request.add)),
            ]
        case .roomCreate:
            let request = try body(Requests.RoomCreate.self, command)
            var room = try db.createRoom(request, creator: user, maxParticipants: config.maxParticipants)
            if request.encrypted == true {
                // Anyone may join a public room: its keys would be everyone's.
                guard room.roomType != .public else { throw StoreError.badRequest([("encrypted", "A public room cannot be encrypted: anyone may join it.")]) }
                try db.markEncrypted(room: room.id)
                encryptedRooms.created(room.id, encrypted: true)
                room.encrypted = true
            }
            return [.reply(to: command, status: .created, body: ClientJSON.encode(room))]
        case .roomUpdate:
            let request = try body(Requests.RoomUpdate.self, command)
            let room = try addingMembers(room: request.roomID, user: user, in: db) {
                try db.updateRoom(request, user: user, maxParticipants: config.maxParticipants)
            }
            return [.reply(to: command, status: .ok, body: try encode(room, in: db))]
        case .roomDelete:
            let roomID = try body(Requests.RoomRef.self, command).roomID
            try db.deactivateRoom(roomID, user: user)
            // Every socket in the room is closed (4403): nothing more reaches them.
            return [Event.room(roomID, key: .removeEveryone, body: []),
                    .reply(to: command, status: .noContent, body: [])]
        case .roomDirect:
            let (room, created) = try db.directRoom(try body(Requests.RoomDirect.self, command), user: user)
            return [.reply(to: command, status: created ? .created : .ok, body: try encode(room, in: db))]
        case .roomOpenDirect:
            let (room, created) = try db.directRoom(try body(Requests.RoomDirect.self, command), user: user)
            return [.reply(to: command, status: created ? .created : .ok, body: [UInt8](try JSONEncoder().encode(Requests.RoomRef(roomID: room.id))))]
        case .roomJoin:
            let roomID = try body(Requests.RoomRef.self, command).roomID
            let joins = try joinsNow(roomID, user: user, in: db)
            try db.joinRoom(roomID, user: user, maxParticipants: config.maxParticipants)
            if joins { try outbox(room: roomID, event: "member_joined", in: db) { Webhooks.memberData(identity.user) } }
            return [.reply(to: command, status: .ok, body: ClientJSON.object(["status": "joined room"]))]
        case .roomEnter:
            // A public room's socket joins it on entry: a join like `join/`.
            let roomID = try body(Requests.RoomRef.self, command).roomID
            let joins = try joinsNow(roomID, user: user, in: db)
            try db.enter(room: roomID, user: user, maxParticipants: config.maxParticipants)
            if joins { try outbox(room: roomID, event: "member_joined", in: db) { Webhooks.memberData(identity.user) } }
            return [.reply(to: command, status: .ok, body: [])]
        case .roomLeave, .memberAdd, .memberRole, .memberRemove, .roomTransfer, .messagePin, .messageUnpin:
            return try writeRoles(command, identity: identity, in: db)
        case .userBlock, .userUnblock:
            return try blockWrite(command, identity: identity, in: db)
        case .webhookCreate, .webhookList, .webhookDelete, .webhookFailures, .webhookIncomingCreate, .webhookIncomingPost:
            return try webhookWrite(command, identity: identity, in: db)
        case .keysPublish, .keysClaim, .keysDelete:
            return try keysWrite(command, identity: identity, in: db)
        case .callStart, .callAction, .callExpire:
            return try writeCalls(command, identity: identity, in: db)
        default:
            if let events = try writePrefs(command, identity: identity, in: db) { return events }
            throw StoreError(code: .badRequest, detail: "Not a store command: \(command.kind.rawValue)")
        }
    }

    /// Stores a message (a client's or an incoming webhook's) with its outbox rows; its event and reply.
    func storeMessage(_ request: Requests.MessageCreate, sender: User, command: Command, in db: any StoreTransaction) throws -> [Event] {
        let encrypted = try checkMessageType(request.messageType, room: request.roomID, in: db)
        let outcome = try db.createMessage(request, sender: sender, maxChars: config.maxMessageChars)
        switch outcome {
        case .resent(let message) where wasPublishedHere(message.id):
            return [.reply(to: command, status: .created, body: ClientJSON.encode(message))]
        case .created(let message), .resent(let message):
            let json = ClientJSON.encode(message)
            if case .created = outcome {
                pendingStored += 1
                // Only a new message: a resend's deliveries were written with it.
                try outbox(room: message.roomID, event: "message_created", in: db) { json }
            }
            if let id = UUID(uuidString: message.id) { pendingPublished.insert(id) }
            // A resend published again: the blocks in force now (a stored message's were not kept).
            let hidden = if case .created = outcome { message.hiddenFrom } else { try db.blockers(of: message.sender.id, room: message.roomID) }
            if encrypted {
                // Each device its own ciphertext, as its own event (no room-wide one: nobody else could read it).
                let entries: [Ciphertext]
                if case .created = outcome {
                    guard let ciphertexts = request.ciphertexts else { throw StoreError.badRequest([("ciphertexts", "This field is required.")]) }
                    entries = try db.storeCiphertexts(message: message.id, room: message.roomID, ciphertexts)
                } else {
                    entries = try db.ciphertexts(message: message.id)
                }
                var sent = message
                sent.hiddenFrom = hidden
                return Self.deviceEvents(sent, entries, type: nil) + [.reply(to: command, status: .created, body: json)]
            }
            return [
                Event.room(message.roomID, key: .message(id: message.id, change: .created), hiddenFrom: hidden,
                           body: ClientJSON.messageEvent(json)),
                .reply(to: command, status: .created, body: json),
            ]
        case .duplicate(let original):
            return [.reply(to: command, status: .ok, body: ClientJSON.encode(original))]
        }
    }

    func wasPublishedHere(_ id: String) -> Bool {
        UUID(uuidString: id).map { publishedHere.contains($0) || pendingPublished.contains($0) } ?? false
    }

    /// Message ids are frontend-assigned UUIDs; another id (none is) would
    /// only be published again on a resend, which frontends drop by its key.
    func remember(_ id: UUID) {
        guard publishedHere.insert(id).inserted else { return }
        publishedOrder.append(id)
        if publishedOrder.count > Self.publishedMemory {
            let drop = publishedOrder.count / 2
            for old in publishedOrder.prefix(drop) { publishedHere.remove(old) }
            publishedOrder.removeFirst(drop)
        }
    }

    /// A DRF page of encoded items, with its absolute links.
    static func pageReply(_ command: Command, _ page: Requests.Page, count: Int64, items: [[UInt8]]) -> Event {
        let links = Pagination.links(page, count: count)
        return .reply(to: command, status: .ok, body: ClientJSON.page(count: count, next: links.next, previous: links.previous, results: items))
    }

    func read(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        switch command.kind {
        case .roomList, .messageList:
            let key = ReadCache.Key(command)
            if let body = try pages.body(for: key, in: db) { return [.reply(to: command, status: .ok, body: body)] }
            let (reply, cacheable) = try readPage(command, identity: identity, in: db)
            if cacheable { pages.store(reply.body, for: key) }
            return [reply]
        case .roomGet:
            let request = try body(Requests.RoomRef.self, command)
            return [.reply(to: command, status: .ok, body: try encode(try db.room(request.roomID, viewer: identity.id), in: db))]
        case .messageGet:
            let ref = try body(Requests.MessageRef.self, command)
            let message = try withCiphertexts([try db.message(ref, user: identity.id)], device: ref.deviceID, viewer: identity.id, in: db)[0]
            return [.reply(to: command, status: .ok, body: ClientJSON.encode(message))]
        case .memberList:
            let request = try body(Requests.RoomPage.self, command)
            let (count, members) = try db.memberPage(request, viewer: identity.id)
            let items = members.map { ClientJSON.member(user: $0.user, role: $0.role.rawValue, joinedAt: $0.joinedAt) }
            return [Self.pageReply(command, request.page, count: count, items: items)]
        case .pinList:
            let request = try body(Requests.RoomPage.self, command)
            let (count, messages) = try db.pins(request, viewer: identity.id)
            return [Self.pageReply(command, request.page, count: count, items: messages.map(ClientJSON.encode))]
        case .mentionList:
            return [try mentionPage(command, identity: identity, in: db)]
        case .userMe, .userSearch, .userBlocked:
            return try userRead(command, identity: identity, in: db)
        case .callGet, .callList, .callSignal, .callDue:
            return try readCalls(command, identity: identity, in: db)
        default:
            throw StoreError(code: .badRequest, detail: "Not a store read: \(command.kind.rawValue)")
        }
    }

    /// A room list or message page, computed (a refusal throws, and is not
    /// cached), and whether it may be cached: not a room list with a timed
    /// mute, whose `muted` changes when the time passes, with no write.
    func readPage(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> (Event, cacheable: Bool) {
        if command.kind == .roomList {
            let request = try body(Requests.RoomList.self, command)
            let (count, rooms) = try db.roomPage(request, viewer: identity.id)
            let reply = Self.pageReply(command, request.page, count: count, items: try encode(rooms: rooms, in: db))
            return (reply, !rooms.contains { $0.mutedUntil != nil })
        }
        let request = try body(Requests.MessageList.self, command)
        let (count, page) = try db.messagePage(request, viewer: identity.id)
        let messages = try withCiphertexts(page, device: request.deviceID, viewer: identity.id, in: db)
        return (Self.pageReply(command, request.page, count: count, items: messages.map(ClientJSON.encode)), true)
    }
}
