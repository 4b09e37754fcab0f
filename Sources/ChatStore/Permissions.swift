import ChatCore

/// Who may do what in a room: every permission decision of both engines is
/// a lookup in `Permissions.table` through `Permissions.authorize`, so the
/// rules are data (api-contract.md "Roles and permissions") and one unit
/// test reads them all.

/// A member's role in a group, project or public room. A direct room's two
/// members are both `member`.
public enum MemberRole: String, Sendable, CaseIterable, Comparable {
    case owner, admin, member

    /// Members lists sort by rank: owner, then admins, then members.
    public var rank: Int {
        switch self {
        case .owner: 0
        case .admin: 1
        case .member: 2
        }
    }

    public static func < (a: MemberRole, b: MemberRole) -> Bool { a.rank < b.rank }
}

/// Who may post in a room: everyone (`members`) or owner and admins
/// (`admins`, an announcement room).
public enum PostPermission: String, Sendable, CaseIterable {
    case members, admins
}

/// What a caller asks to do to a room or to someone in it.
public enum RoomAction: String, Sendable, CaseIterable {
    /// `PATCH` the room: name, `post_permission`.
    case update
    /// Add members (`POST .../members/`, `PATCH` with `participant_ids`).
    case addMembers
    /// Remove another member (`DELETE .../members/{user}/`); target-checked.
    case removeMember
    /// Make a member admin or an admin member; target-checked.
    case setRole
    case transferOwnership
    case deleteRoom
    /// Delete a message someone else sent; target-checked (its sender's role).
    case deleteOthersMessage
    case pin
    /// Post in a room whose `post_permission` is `members`.
    case post
    /// Post in an announcement room (`post_permission` `admins`).
    case postInAnnouncement
    /// Add, list and delete the room's webhooks.
    case manageWebhooks
}

public enum Permissions {
    /// The roles allowed each action in a group, project or public room.
    /// A missing action is allowed to nobody.
    public static let table: [RoomAction: Set<MemberRole>] = [
        .update: [.owner, .admin],
        .addMembers: [.owner, .admin],
        .removeMember: [.owner, .admin],
        .setRole: [.owner],
        .transferOwnership: [.owner],
        .deleteRoom: [.owner],
        .deleteOthersMessage: [.owner, .admin],
        .pin: [.owner, .admin],
        .post: [.owner, .admin, .member],
        .postInAnnouncement: [.owner, .admin],
        .manageWebhooks: [.owner, .admin],
    ]

    /// A direct room's rows, where they differ from `table`: its two
    /// members both pin, and nobody manages its membership. Its creator
    /// keeps the seed's rights (`PATCH`, `DELETE`) through `creatorActsAs`.
    public static let direct: [RoomAction: Set<MemberRole>] = [
        .update: [.owner],
        .addMembers: [],
        .removeMember: [],
        .setRole: [],
        .transferOwnership: [],
        .deleteRoom: [.owner],
        .deleteOthersMessage: [],
        .pin: [.owner, .member],
        .manageWebhooks: [],
    ]

    /// The role a room's creator acts with where its stored role is not
    /// one: the creator of a direct room (a `member`) acts as its owner.
    public static let creatorActsAs: [RoomType: MemberRole] = [.direct: .owner]

    /// Actions on another member: for each actor role, the target roles it
    /// may act on. An admin removes members only and cannot delete the
    /// owner's messages; nobody acts on the owner this way (ownership only
    /// moves by transfer).
    public static let targets: [RoomAction: [MemberRole: Set<MemberRole>]] = [
        .removeMember: [.owner: [.admin, .member], .admin: [.member]],
        .setRole: [.owner: [.admin, .member]],
        .transferOwnership: [.owner: [.admin, .member]],
        .deleteOthersMessage: [.owner: [.admin, .member], .admin: [.admin, .member]],
    ]

    /// What a refusal says, by action.
    package static func refusal(_ action: RoomAction) -> String {
        switch action {
        case .update, .addMembers: "Only the room owner or an admin can modify this room"
        case .removeMember: "You cannot remove this member"
        case .setRole: "Only the room owner can change roles"
        case .transferOwnership: "Only the room owner can transfer ownership"
        case .deleteRoom: "Only the room owner can delete this room"
        case .deleteOthersMessage: "You can only delete your own messages"
        case .pin: "Only the room owner or an admin can pin messages"
        case .post, .postInAnnouncement: "Only the room owner and admins can post in this room"
        case .manageWebhooks: "Only the room owner or an admin can manage webhooks"
        }
    }

    /// What a refusal by the target rules says (the actor's role may do the
    /// action, not to this member).
    static func targetRefusal(_ action: RoomAction, target: MemberRole) -> String {
        switch (action, target) {
        case (.deleteOthersMessage, _): "You cannot delete the owner's messages"
        case (.setRole, .owner): "The owner's role changes only by transferring ownership"
        case (.transferOwnership, .owner): "You already own this room"
        case (.removeMember, .owner): "The room owner cannot be removed"
        default: refusal(action)
        }
    }

    /// The role the table is read with: the stored one, or the creator's.
    public static func actingRole(_ role: MemberRole?, isCreator: Bool, roomType: RoomType) -> MemberRole? {
        guard role != nil else { return nil }
        if isCreator, let acting = creatorActsAs[roomType] { return acting }
        return role
    }

    /// Whether `role` may do `action` in a room of `roomType` (to a member
    /// of role `target`, for the actions that have one). Nil role: not a member.
    public static func allows(_ action: RoomAction, role: MemberRole?, roomType: RoomType, target: MemberRole? = nil) -> Bool {
        guard let role else { return false }
        let allowed = roomType == .direct ? (direct[action] ?? table[action] ?? []) : (table[action] ?? [])
        guard allowed.contains(role) else { return false }
        if let target, let rules = targets[action] {
            return rules[role]?.contains(target) ?? false
        }
        return true
    }

    /// The check every engine calls: throws `403` with a clear message
    /// unless the table allows it. A non-member gets the usual no-access.
    public static func authorize(_ action: RoomAction, info: Store.RoomInfo, user: String, target: MemberRole? = nil) throws {
        guard info.role != nil else { throw StoreError.forbidden(Store.noAccess) }
        let role = actingRole(info.role, isCreator: info.createdBy == user, roomType: info.roomType)
        guard allows(action, role: role, roomType: info.roomType) else { throw StoreError.forbidden(refusal(action)) }
        guard allows(action, role: role, roomType: info.roomType, target: target) else {
            throw StoreError.forbidden(targetRefusal(action, target: target ?? .member))
        }
    }

    /// The post check of a message: an announcement room needs its row.
    public static func authorizePost(info: Store.RoomInfo, user: String) throws {
        try authorize(info.postPermission == .admins ? .postInAnnouncement : .post, info: info, user: user)
    }
}
