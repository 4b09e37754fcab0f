import ChatConfig
import Foundation
import Testing

/// `database:` (CHAT_DATABASE_URL): PostgreSQL when set, SQLite in dataDir when not.
@Suite struct DatabaseConfigTests {
    @Test func theDatabaseURLComesFromTheFileOrTheEnvironment() async throws {
        #expect(try await ChatConfig.load(file: nil, environment: [:]).database == nil)
        let url = "postgres://chatd:secret@db.example.com:5432/chatd"
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_DATABASE_URL": url]).database == url)
        #expect(try await ChatConfig.load(file: nil, environment: ["CHAT_DATABASE": url]).database == url)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-\(UUID()).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "chat:\n  database: \"\(url)\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        let fromFile = try await ChatConfig.load(file: path, environment: [:])
        #expect(fromFile.database == url)
        // Every child of the supervisor writes the same database, whatever the file says later.
        #expect(fromFile.fixedEnvironment["CHAT_DATABASE_URL"] == url)
        #expect(try await ChatConfig.load(file: path, environment: ["CHAT_DATABASE_URL": ""]).database == nil)
    }

    @Test func aDatabaseThatIsNotPostgresIsRefused() async throws {
        await #expect(throws: (any Error).self) {
            _ = try await ChatConfig.load(file: nil, environment: ["CHAT_DATABASE_URL": "mysql://db/chatd"])
        }
    }
}
