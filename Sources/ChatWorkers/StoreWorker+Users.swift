import ChatCore
import ChatStore
import ChatWire

/// `user.*`: users/me, the lookup and blocks (api-contract.md "Users",
/// "Mute and block"). They go to the store shard of the caller's id.
extension StoreWorker {
    func blockWrite(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        let target = try body(Requests.UserRef.self, command).userID
        if command.kind == .userUnblock {
            try db.unblock(target, by: identity.id)
            return [.reply(to: command, status: .noContent, body: [])]
        }
        // No event: the blocked user is never told.
        let user = try db.block(target, by: identity.id)
        return [.reply(to: command, status: .ok, body: ClientJSON.encode(user))]
    }

    func userRead(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        switch command.kind {
        case .userMe:
            // The batch upserted a caller it had not seen: the row is there.
            let user = try db.user(id: identity.id) ?? identity.user
            return [.reply(to: command, status: .ok, body: ClientJSON.encode(user))]
        case .userSearch:
            let query = try body(Requests.UserSearch.self, command).query
            let users = try db.searchUsers(query, viewer: identity.id, limit: Validation.maxUserLookup)
            return [.reply(to: command, status: .ok, body: ClientJSON.array(users.map(ClientJSON.encode)))]
        default:
            let request = try body(Requests.BlockedList.self, command)
            let (count, users) = try db.blockedPage(request.page, viewer: identity.id)
            return [Self.pageReply(command, request.page, count: count, items: users.map(ClientJSON.encode))]
        }
    }
}
