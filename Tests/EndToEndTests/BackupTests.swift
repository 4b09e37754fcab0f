import ChatCore
import ChatTesting
import Foundation
import GRDB
import Synchronization
import Testing

extension EndToEnd {
    /// `chatd backup`, and a restore from what it wrote.
    @Suite struct Backup {
        /// `chatd <arguments>` as an operator runs it, finding the server by `CHAT_DATA_DIR`: status, output, errors.
        static func chatd(_ arguments: [String], dataDir: String) throws -> (status: Int32, out: String, err: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try TestServer.binary())
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CHAT_") }.merging(["CHAT_DATA_DIR": dataDir]) { $1 }
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            DispatchQueue.global().asyncAfter(deadline: .now() + 60) { if process.isRunning { process.terminate() } }
            let outData = out.fileHandleForReading.readDataToEndOfFile()
            let errData = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
        }

        /// A copy opened as a database: its integrity check and the ids of the room's messages.
        static func inspect(_ path: String, room: String) throws -> (check: String?, ids: Set<String>) {
            let database = try DatabaseQueue(path: path)
            defer { try? database.close() }
            return try database.read { db in
                let check = try String.fetchOne(db, sql: "PRAGMA integrity_check")
                return (check, Set(try String.fetchAll(db, sql: "SELECT id FROM messages WHERE room_id = ?", arguments: [room])))
            }
        }

        /// `chatd backup` while messages are being sent: the copy is a sound
        /// database with every message acknowledged before it started, and
        /// put back in place of the data (the server stopped), it serves
        /// that history.
        @Test(.disabled(if: PostgresServer.enabled, "chatd backup copies the SQLite file; PostgreSQL is backed up with pg_dump"))
        func aBackupTakenWhileServingHasEveryAcknowledgedMessageAndRestores() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            var stopped = false
            defer { if !stopped { server.stop() } }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let base = "/api/chat/rooms/\(room)/messages/"
            let acks = Acknowledged()
            for i in 0..<50 { try await acks.send("before \(i)", server: server, token: tokens[0], path: base) }
            // More keep coming while the backup runs (bounded: 300 at most).
            let sender = Task {
                var i = 0
                while acks.sending.load(ordering: .relaxed) && i < 300 {
                    try await acks.send("during \(i)", server: server, token: tokens[0], path: base)
                    i += 1
                }
            }
            try await server.waitUntil(timeout: 10, "sending under way") { acks.entries.withLock { $0.count } >= 60 }
            let backupDir = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: backupDir) }
            let copy = backupDir + "/chat-backup.sqlite"
            let started = Date()
            let backup = try Self.chatd(["backup", copy], dataDir: server.dataDir)
            acks.sending.store(false, ordering: .relaxed)
            try await sender.value
            #expect(backup.status == 0, "\(backup.err)")
            #expect(backup.out.contains("to \(copy):") && backup.out.contains(" pages, "), "\(backup.out)")
            let mode = (try FileManager.default.attributesOfItem(atPath: copy)[.posixPermissions] as? Int) ?? 0
            #expect(mode & 0o077 == 0, "the copy is private")
            #expect(try FileManager.default.contentsOfDirectory(atPath: backupDir) == ["chat-backup.sqlite"], "no temporary file left")

            let before = acks.entries.withLock { $0.filter { $0.at < started } }
            #expect(before.count >= 60)
            let first = try Self.inspect(copy, room: room)
            #expect(first.check == "ok")
            let missing = before.filter { !first.ids.contains($0.id) }
            #expect(missing.isEmpty, "missing from the backup: \(missing.map(\.content))")

            // Refused over an existing file; replaced with --force.
            let again = try Self.chatd(["backup", copy], dataDir: server.dataDir)
            #expect(again.status != 0 && again.err.contains("\(copy) exists: pass --force to replace it"), "\(again.err)")
            #expect(try Self.chatd(["backup", "--force", copy], dataDir: server.dataDir).status == 0)
            let forced = try Self.inspect(copy, room: room)
            let all = acks.entries.withLock { $0 }
            #expect(forced.check == "ok" && forced.ids == Set(all.map(\.id)), "taken after the sending ended: every message")

            // Restore the latest copy: stop, the copy in place of the database
            // (its WAL and SHM gone with it), the index dropped, start.
            server.stop(keepData: true)
            stopped = true
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: server.dataDir + "/chat.sqlite" + suffix) }
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: server.dataDir + "/search.sqlite" + suffix) }
            try FileManager.default.copyItem(atPath: copy, toPath: server.dataDir + "/chat.sqlite")
            let restored = try await TestServer.start(dataDir: server.dataDir)
            defer { restored.stop() }
            let token = try await restored.token(sub: "bob")
            let history = try await Steps.contents(restored, token: token, room: room)
            #expect(history == all.map(\.content))
        }

        /// `migrate` and `backup` name the database they used, in full: run
        /// from the wrong directory, or without the server's data directory,
        /// the operator sees it was not the server's.
        @Test func migrateAndBackupNameTheDatabaseTheyUsed() throws {
            let dataDir = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dataDir) }
            let database = URL(fileURLWithPath: dataDir + "/chat.sqlite").standardized.path
            let created = try Self.chatd(["migrate"], dataDir: dataDir)
            #expect(created.status == 0 && created.out == "created \(database): there was no database there\n", "\(created)")
            let migrated = try Self.chatd(["migrate"], dataDir: dataDir)
            #expect(migrated.status == 0 && migrated.out == "migrated \(database)\n", "\(migrated)")

            let missing = dataDir + "/backups/"
            let refused = try Self.chatd(["backup", missing], dataDir: dataDir)
            #expect(refused.status != 0 && refused.err.contains("\(missing) is not a directory: create it first, or name a file"), "\(refused)")
            let copied = try Self.chatd(["backup", dataDir + "/copy.sqlite"], dataDir: dataDir)
            #expect(copied.status == 0 && copied.out.hasPrefix("backed up \(database) to \(dataDir)/copy.sqlite: "), "\(copied)")
        }

        /// With `database: postgres://…`, `migrate` creates the schema there
        /// (twice is a no-op) and `backup` refuses, naming pg_dump.
        @Test(.enabled(if: PostgresServer.isInstalled))
        func migrateAndBackupOnPostgreSQL() throws {
            let dataDir = try TestServer.temporaryDirectory()
            defer {
                PostgresServer.dropDatabase(forDataDir: dataDir)
                try? FileManager.default.removeItem(atPath: dataDir)
            }
            let url = try PostgresServer.databaseURL(forDataDir: dataDir)
            let server = try PostgresServer.start()
            func chatd(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: try TestServer.binary())
                process.arguments = arguments
                process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CHAT_") }
                    .merging(["CHAT_DATA_DIR": dataDir, "CHAT_DATABASE_URL": url]) { $1 }
                let out = Pipe(), err = Pipe()
                (process.standardOutput, process.standardError) = (out, err)
                try process.run()
                let (outData, errData) = (out.fileHandleForReading.readDataToEndOfFile(), err.fileHandleForReading.readDataToEndOfFile())
                process.waitUntilExit()
                return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
            }
            let name = String(url.split(separator: "/").last ?? "")
            for _ in 0..<2 {
                let migrated = try chatd(["migrate"])
                #expect(migrated.status == 0 && migrated.out == "migrated postgres://127.0.0.1:\(server.port)/\(name)\n", "\(migrated)")
            }
            let applied = try PostgresServer.rows("SELECT name FROM chatd_migrations ORDER BY name", forDataDir: dataDir)
            #expect(applied.sorted() == [
                "v1", "v16-blocks", "v16-prefs", "v16-roles", "v16-store-message", "v16-store-message-2", "v16-webhook-backoff", "v16-webhooks",
                "v17-calls", "v18-encryption", "v2-search", "v3-store-message",
            ])
            #expect(try PostgresServer.rows("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'", forDataDir: dataDir) == ["pg_trgm"])
            #expect(!FileManager.default.fileExists(atPath: dataDir + "/chat.sqlite"))
            let refused = try chatd(["backup", dataDir + "/copy.sqlite"])
            #expect(refused.status != 0 && refused.err.contains("pg_dump"), "\(refused)")
        }
    }
}

/// Messages a server acknowledged (201), with when the acknowledgement came,
/// and the switch that ends a sending task.
final class Acknowledged: Sendable {
    let entries = Mutex<[(id: String, content: String, at: Date)]>([])
    let sending = Atomic<Bool>(true)

    func send(_ content: String, server: TestServer, token: String, path: String) async throws {
        let response = try await server.request("POST", path, token: token, json: ["content": content])
        guard response.status == 201, let id = response.object["id"] as? String else { return }
        entries.withLock { $0.append((id, content, Date())) }
    }
}
