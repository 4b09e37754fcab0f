import ChatCore
import ChatStore
import Foundation
import GRDB
import Testing

/// `ChatDatabase` over any writer: the file the workers open and the memory
/// the unit tests use get the same schema and the same connection settings.
@Suite struct ChatDatabaseTests {
    static func temporaryDirectory() throws -> String {
        let directory = NSTemporaryDirectory() + "chatd-db-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    static func schema(_ database: ChatDatabase) throws -> [String] {
        try database.writer.read { db in
            try String.fetchAll(db, sql: "SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
        }
    }

    static func pragma(_ name: String, _ database: ChatDatabase) throws -> String? {
        try database.writer.read { try String.fetchOne($0, sql: "PRAGMA \(name)") }
    }

    @Test func theFileIsAPrivateWALPoolWithTheStoresPragmas() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/chat.sqlite"
        let database = try ChatDatabase(path: path)
        #expect(database.writer is DatabasePool)
        #expect(try Self.pragma("journal_mode", database) == "wal")
        #expect(try Self.pragma("foreign_keys", database) == "1")
        #expect(try Self.pragma("synchronous", database) == "1")  // NORMAL
        try database.writer.write { try Store.upsert(Identity(sub: "alice", email: "a@example.com", name: nil, picture: nil), in: $0) }
        for file in [path, path + "-wal"] {
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(file)")
        }
    }

    @Test func memoryAndFileGetTheSameSchemaAndSettings() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = try ChatDatabase(path: directory + "/chat.sqlite")
        let memory = try ChatDatabase.inMemory()
        #expect(memory.writer is DatabaseQueue)
        let schema = try Self.schema(memory)
        #expect(schema.contains { $0.hasPrefix("table messages:") })
        #expect(schema == (try Self.schema(file)))
        #expect(try Self.pragma("foreign_keys", memory) == "1")
    }

    @Test func reopeningAFileKeepsItsDataAndMigratesNothingTwice() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/chat.sqlite"
        let alice = Identity(sub: "alice", email: "a@example.com", name: "Alice", picture: nil)
        try ChatDatabase(path: path).writer.write { try Store.upsert(alice, in: $0) }
        let again = try ChatDatabase(path: path)
        #expect(try again.writer.read { try Store.user(id: alice.id, in: $0) } == alice.user)
    }

    /// Callers written against the pool (the workers) read and write through
    /// `pool`, whatever the writer is.
    @Test func poolIsTheWriter() throws {
        let database = try ChatDatabase.inMemory()
        #expect(database.pool === database.writer)
    }
}
