import ChatCore
import Foundation
import GRDB
import Testing

@testable import ChatStore

/// v16-roles on a database written before it: every existing room's
/// creator owns it, everyone else is a member, a direct room has two members.
@Suite struct RolesMigrationTests {
    @Test func existingRoomsGetTheirOwners() throws {
        let directory = try ChatDatabaseTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/chat.sqlite"
        let before = try DatabaseQueue(path: path)
        try ChatDatabase.migrator.migrate(before, upTo: "v4-session-frontend")
        try before.write { db in
            for user in ["a", "b", "c"] {
                try db.execute(sql: "INSERT INTO users (id, sub, email, display_name, created_at) VALUES (?, ?, '', ?, 0)", arguments: [user, user, user])
            }
            try db.execute(sql: "INSERT INTO rooms (id, room_type, created_by, created_at, updated_at) VALUES ('g', 'group', 'a', 0, 0)")
            try db.execute(sql: """
                INSERT INTO rooms (id, room_type, created_by, created_at, updated_at, direct_user1, direct_user2)
                VALUES ('d', 'direct', 'a', 0, 0, 'a', 'c')
                """)
            for (room, user) in [("g", "a"), ("g", "b"), ("g", "c"), ("d", "a"), ("d", "c")] {
                try db.execute(sql: "INSERT INTO room_participants (room_id, user_id, joined_at) VALUES (?, ?, 0)", arguments: [room, user])
            }
        }
        try before.close()
        let database = try ChatDatabase(path: path)
        let (roles, posting, members) = try database.read { tx in
            let roles = try [("g", "a"), ("g", "b"), ("g", "c"), ("d", "a"), ("d", "c")].map { try tx.roomInfo($0.0, user: $0.1)?.role }
            return (roles, try tx.roomInfo("g", user: "a")?.postPermission, try tx.members(room: "g").map(\.user.id))
        }
        #expect(roles == [.owner, .member, .member, .member, .member])
        #expect(posting == .members)
        #expect(members == ["a", "b", "c"])
    }
}
