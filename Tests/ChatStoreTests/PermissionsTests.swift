import ChatCore
import ChatStore
import Testing

/// The permission table, read as api-contract.md "Roles and permissions"
/// states it: one expectation per action, role and room type.
@Suite struct PermissionsTests {
    /// Who may do each action in a group room (project and public alike),
    /// and in a direct room (where the creator acts as owner).
    static let expected: [RoomAction: (group: Set<MemberRole>, direct: Set<MemberRole>)] = [
        .update: ([.owner, .admin], [.owner]),
        .addMembers: ([.owner, .admin], []),
        .removeMember: ([.owner, .admin], []),
        .setRole: ([.owner], []),
        .transferOwnership: ([.owner], []),
        .deleteRoom: ([.owner], [.owner]),
        .deleteOthersMessage: ([.owner, .admin], []),
        .pin: ([.owner, .admin], [.owner, .member]),
        .post: ([.owner, .admin, .member], [.owner, .admin, .member]),
        .postInAnnouncement: ([.owner, .admin], [.owner, .admin]),
        .manageWebhooks: ([.owner, .admin], []),
    ]

    @Test func everyActionHasItsRowAndNoMore() {
        for action in RoomAction.allCases {
            let row = Self.expected[action]
            #expect(row != nil, "no expectation for \(action)")
            for type in RoomType.allCases {
                let allowed = Set(MemberRole.allCases.filter { Permissions.allows(action, role: $0, roomType: type) })
                #expect(allowed == (type == .direct ? row?.direct : row?.group), "\(action) in a \(type) room")
            }
        }
    }

    @Test func nonMembersMayDoNothing() {
        for action in RoomAction.allCases {
            for type in RoomType.allCases { #expect(!Permissions.allows(action, role: nil, roomType: type)) }
        }
    }

    /// An admin removes members only and cannot delete the owner's
    /// messages; nobody removes or demotes the owner.
    @Test func targetsLimitWhomAnActionReaches() {
        #expect(Permissions.allows(.removeMember, role: .owner, roomType: .group, target: .admin))
        #expect(Permissions.allows(.removeMember, role: .admin, roomType: .group, target: .member))
        #expect(!Permissions.allows(.removeMember, role: .admin, roomType: .group, target: .admin))
        #expect(!Permissions.allows(.removeMember, role: .owner, roomType: .group, target: .owner))
        #expect(Permissions.allows(.deleteOthersMessage, role: .admin, roomType: .public, target: .admin))
        #expect(!Permissions.allows(.deleteOthersMessage, role: .admin, roomType: .public, target: .owner))
        #expect(Permissions.allows(.deleteOthersMessage, role: .owner, roomType: .project, target: .admin))
        #expect(!Permissions.allows(.setRole, role: .owner, roomType: .group, target: .owner))
        #expect(!Permissions.allows(.transferOwnership, role: .owner, roomType: .group, target: .owner))
        let admin = Store.RoomInfo(id: "r", roomType: .group, isActive: true, createdBy: "a", isParticipant: true, role: .admin)
        #expect(throws: StoreError.forbidden("You cannot delete the owner's messages")) {
            try Permissions.authorize(.deleteOthersMessage, info: admin, user: "b", target: .owner)
        }
        #expect(throws: StoreError.forbidden("You cannot remove this member")) {
            try Permissions.authorize(.removeMember, info: admin, user: "b", target: .admin)
        }
        // Every target rule names only actors the table allows.
        for (action, rules) in Permissions.targets {
            for actor in rules.keys { #expect(Permissions.table[action]?.contains(actor) == true, "\(action) by \(actor)") }
        }
    }

    /// A direct room's creator keeps the seed's rights (PATCH, DELETE); the
    /// other member does not; stored roles elsewhere are what counts.
    @Test func aDirectRoomsCreatorActsAsItsOwner() throws {
        func info(_ type: RoomType, role: MemberRole?, creator: String = "a") -> Store.RoomInfo {
            Store.RoomInfo(id: "r", roomType: type, isActive: true, createdBy: creator, isParticipant: role != nil, role: role)
        }
        try Permissions.authorize(.deleteRoom, info: info(.direct, role: .member), user: "a")
        #expect(throws: StoreError.forbidden("Only the room owner can delete this room")) {
            try Permissions.authorize(.deleteRoom, info: info(.direct, role: .member), user: "b")
        }
        try Permissions.authorize(.pin, info: info(.direct, role: .member), user: "b")
        // A group room's creator who passed ownership on is an admin like any other.
        #expect(throws: StoreError.self) { try Permissions.authorize(.deleteRoom, info: info(.group, role: .admin), user: "a") }
        #expect(throws: StoreError.forbidden(Store.noAccess)) { try Permissions.authorize(.post, info: info(.group, role: nil), user: "z") }
    }

    @Test func announcementRoomsTakeOwnerAndAdminsPosts() throws {
        var room = Store.RoomInfo(id: "r", roomType: .group, isActive: true, createdBy: "a", isParticipant: true, role: .member, postPermission: .admins)
        #expect(throws: StoreError.forbidden("Only the room owner and admins can post in this room")) {
            try Permissions.authorizePost(info: room, user: "b")
        }
        room.role = .admin
        try Permissions.authorizePost(info: room, user: "b")
        room.postPermission = .members
        room.role = .member
        try Permissions.authorizePost(info: room, user: "b")
    }
}
