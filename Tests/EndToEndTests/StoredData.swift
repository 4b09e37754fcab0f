import ChatTesting
import Foundation
import GRDB

extension Steps {
    /// The content of every stored message, read from the database itself:
    /// the SQLite file, or with `CHATD_TEST_POSTGRES=1` the server's
    /// PostgreSQL database (dropped after, as its data directory goes).
    /// The server is stopped, its data kept.
    static func storedContents(_ server: TestServer) async throws -> [String] {
        if PostgresServer.enabled {
            defer { PostgresServer.dropDatabase(forDataDir: server.dataDir) }
            return try PostgresServer.rows("SELECT content FROM messages", forDataDir: server.dataDir)
        }
        return try await DatabaseQueue(path: server.dataDir + "/chat.sqlite", configuration: .readOnly).read {
            try String.fetchAll($0, sql: "SELECT content FROM messages")
        }
    }
}
