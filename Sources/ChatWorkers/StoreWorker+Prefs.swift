import ChatCore
import ChatStore
import ChatWire

/// Mute, notification level and the mentions feed (issue 16).
extension StoreWorker {
    /// The events of a preferences command, or nil when `command` is not one.
    func writePrefs(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event]? {
        switch command.kind {
        case .roomMute:
            let request = try body(Requests.RoomMute.self, command)
            try db.mute(request, user: identity.id, muted: true)
            return [.reply(to: command, status: .ok, body: ClientJSON.muteAnswer(until: request.until.map(Timestamp.init(micros:))))]
        case .roomUnmute:
            try db.mute(try body(Requests.RoomMute.self, command), user: identity.id, muted: false)
            return [.reply(to: command, status: .noContent, body: [])]
        case .roomNotifications:
            let request = try body(Requests.RoomNotifications.self, command)
            try db.setNotificationLevel(request, user: identity.id)
            return [.reply(to: command, status: .ok, body: ClientJSON.object(["level": request.level]))]
        default:
            return nil
        }
    }

    /// A page of the caller's mentions, newest first.
    func mentionPage(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> Event {
        let request = try body(Requests.MentionList.self, command)
        let (count, messages) = try db.mentionPage(request, viewer: identity.id)
        return Self.pageReply(command, request.page, count: count, items: messages.map(ClientJSON.encode))
    }
}
