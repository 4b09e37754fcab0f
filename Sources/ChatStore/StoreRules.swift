import ChatCore

/// Domain rules that need no database, shared by both engines (SQLite's
/// `Store` statics and ChatPostgres), so the two cannot drift apart.
extension Store {
    /// A message's reactions after `user` adds or removes `request.emoji`, or
    /// nil when nothing changes (an add already there, a remove not there).
    /// Refuses a deleted message, a malformed emoji, and one emoji too many.
    package static func reactions(
        after request: Requests.MessageReact, by user: String, on message: Message
    ) throws -> [(emoji: String, users: [String])]? {
        guard !message.isDeleted else { throw StoreError.badRequest(error: "Cannot react to a deleted message") }
        if let error = Validation.emojiError(request.emoji) { throw StoreError.badRequest([("emoji", error)]) }
        var reactions = message.reactions
        if let index = reactions.firstIndex(where: { $0.emoji == request.emoji }) {
            if request.add {
                if !reactions[index].users.contains(user) { reactions[index].users.append(user) }
            } else {
                reactions[index].users.removeAll { $0 == user }
                if reactions[index].users.isEmpty { reactions.remove(at: index) }
            }
        } else if request.add {
            guard reactions.count < Validation.maxDistinctEmoji else {
                throw StoreError.badRequest([("emoji", "A message has at most \(Validation.maxDistinctEmoji) different reactions.")])
            }
            reactions.append((request.emoji, [user]))
        }
        let unchanged = reactions.map(\.emoji) == message.reactions.map(\.emoji) && reactions.map(\.users) == message.reactions.map(\.users)
        return unchanged ? nil : reactions
    }

    /// A room update's refusals that need no database: who may (`update`,
    /// and `addMembers` when it adds); a direct room keeps exactly its two
    /// members and no name (adding a third would hand them the two people's
    /// whole history); a valid name and `post_permission`.
    /// Returns the participant ids to add, without repeats, in order.
    package static func checkedUpdate(_ request: Requests.RoomUpdate, of info: RoomInfo, by user: String) throws -> [String] {
        try Permissions.authorize(.update, info: info, user: user)
        if !request.participantIDs.isEmpty && info.roomType != .direct {
            try Permissions.authorize(.addMembers, info: info, user: user)
        }
        var errors: [(field: String, message: String)] = []
        if let value = request.postPermission {
            if PostPermission(rawValue: value) == nil {
                errors.append(("post_permission", "\"\(value)\" is not a valid choice."))
            } else if info.roomType == .direct && value != PostPermission.members.rawValue {
                errors.append(("post_permission", "Direct message rooms cannot be announcement rooms."))
            }
        }
        if info.roomType == .direct {
            if !request.participantIDs.isEmpty { errors.append(("participant_ids", "Direct message rooms cannot have other participants.")) }
            if request.setName && request.name != nil { errors.append(("name", "Direct message rooms cannot be named.")) }
        }
        if request.setName, let error = Validation.roomNameError(request.name) { errors.append(("name", error)) }
        if !errors.isEmpty { throw StoreError.badRequest(errors) }
        var seen = Set<String>()
        return request.participantIDs.filter { seen.insert($0).inserted }
    }
}

extension Store {
    /// The id-only user a message row's `pinned_by` reads as, until
    /// `fillPinnedBy` puts the whole user in its place.
    package static func pinner(_ id: String) -> User { User(id: id, email: "", displayName: "") }

    /// Fills in who pinned each pinned message; no lookup when none is.
    package static func fillPinnedBy(_ messages: inout [Message], users: (Set<String>) throws -> [String: User]) throws {
        let ids = Set(messages.compactMap { $0.pinnedBy?.id })
        guard !ids.isEmpty else { return }
        let found = try users(ids)
        for index in messages.indices {
            if let id = messages[index].pinnedBy?.id { messages[index].pinnedBy = found[id] ?? pinner(id) }
        }
    }
}
