import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 10: private by default. Everything chatd writes (messages,
    /// uploads, the index, sockets) is its user's alone, whatever umask it
    /// was started with.
    @Suite struct PrivateByDefault {
        /// Every directory, file and socket under `root`, by path relative to it, with its mode.
        static func walk(_ root: String) -> [(path: String, kind: mode_t, mode: mode_t)] {
            var found: [(String, mode_t, mode_t)] = []
            var pending = [""]
            while let relative = pending.popLast() {
                let path = relative.isEmpty ? root : root + "/" + relative
                var info = stat()
                guard lstat(path, &info) == 0 else { continue }  // gone meanwhile (a staging file)
                found.append((relative.isEmpty ? "." : relative, info.st_mode & S_IFMT, info.st_mode & 0o7777))
                if info.st_mode & S_IFMT == S_IFDIR {
                    for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                        pending.append(relative.isEmpty ? name : relative + "/" + name)
                    }
                }
            }
            return found
        }

        /// What is wrong with the modes under `root` (empty when all is private).
        static func openEntries(_ root: String, ignoring ignored: Set<String> = []) -> [String] {
            walk(root).compactMap { entry in
                guard !ignored.contains(entry.path) else { return nil }
                let ok = switch entry.kind {
                case S_IFDIR: entry.mode == 0o700
                case S_IFREG: entry.mode == 0o600
                case S_IFSOCK: entry.mode & 0o077 == 0  // 0600 or 0700: the owner's only
                default: false
                }
                return ok ? nil : "\(entry.path) \(String(entry.mode, radix: 8))"
            }
        }

        @Test func everythingTheServerWritesIsPrivateUnderUmask000() async throws {
            let parent = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: parent) }
            // A data directory that exists already, open to everyone, with an
            // empty database file SQLite will take as new: both are narrowed.
            let dataDir = parent + "/data"
            #expect(mkdir(dataDir, 0o755) == 0 && chmod(dataDir, 0o755) == 0)
            // (SQLite's file: on PostgreSQL, CHATD_TEST_POSTGRES=1, chatd writes no database file to narrow.)
            if !PostgresServer.enabled {
                #expect(FileManager.default.createFile(atPath: dataDir + "/chat.sqlite", contents: nil, attributes: [.posixPermissions: 0o644]))
            }
            let server = try await TestServer.start(dataDir: dataDir, umask: "000")
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"])
            let bob = try server.webSocket("/ws/chat/\(room)/", token: tokens[1])
            #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[0], json: ["content": "private words"]).status == 201)
            #expect(try bob.receiveMessage(content: "private words") != nil)
            let upload = try await EndToEnd.Files.upload(server, token: tokens[0], room: room, fields: ["content": "a file"], fileName: "notes.txt", file: Data("secret notes".utf8))
            #expect(upload.status == 201, "\(upload.text)")
            try await server.waitUntil(timeout: 10, "the search index has the message") {
                let found = try await server.request("GET", "/api/chat/search/messages/?q=private", token: tokens[1])
                return (found.json as? [Any])?.count == 1
            }
            let download = try await server.request("GET", "/api/chat/rooms/\(room)/messages/\(upload.object["id"] as? String ?? "")/download/", token: tokens[1])
            #expect(download.text == "secret notes")

            let entries = Self.walk(dataDir).map(\.path)
            // The walk saw what it is meant to check.
            // On PostgreSQL (CHATD_TEST_POSTGRES=1) the data and the index are not files here.
            let sqlite = PostgresServer.enabled ? [] : ["chat.sqlite", "chat.sqlite-wal", "chat.sqlite-shm", "search.sqlite"]
            for expected in sqlite + ["files", "staging", "run"] {
                #expect(entries.contains(expected), "\(expected) not found in \(entries.sorted())")
            }
            #expect(entries.contains { $0.hasPrefix("files/") && $0.split(separator: "/").count == 3 }, "no stored upload in \(entries.sorted())")
            for socket in ["run/control.sock", "run/notify.sock", "run/events.out", "run/store-0.in"] {
                #expect(entries.contains(socket), "\(socket) not found in \(entries.sorted())")
            }
            // chatd.log is the test harness's, opened before chatd started.
            let open = Self.openEntries(dataDir, ignoring: ["chatd.log"])
            #expect(open.isEmpty, "not private: \(open)")
        }

        /// The server generates the development secret when none is
        /// configured (`chatd token` only reads it): under umask 000 the new
        /// data directory is 0700 and the secret 0600, and `token` started
        /// under umask 000 too reads it without opening anything.
        @Test func theGeneratedSecretIsPrivateUnderUmask000() async throws {
            let parent = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: parent) }
            let dataDir = parent + "/data"
            // The harness opens its log there first; the server narrows it.
            #expect(mkdir(dataDir, 0o755) == 0)
            // An empty secret is none: the server makes one at its first start.
            let server = try await TestServer.start(environment: ["CHAT_JWT_SECRET": ""], dataDir: dataDir, umask: "000")
            defer { server.stop() }
            #expect(FileManager.default.fileExists(atPath: dataDir + "/jwt-secret"))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "umask 000 && exec \"$0\" token --sub alice", try TestServer.binary()]
            var environment = ProcessInfo.processInfo.environment
            environment["CHAT_DATA_DIR"] = dataDir
            environment["CHAT_JWT_SECRET"] = nil
            process.environment = environment
            process.standardOutput = Pipe()
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            // chatd.log is the test harness's, opened before chatd started.
            let open = Self.openEntries(dataDir, ignoring: ["chatd.log"])
            #expect(open.isEmpty, "not private: \(open)")
        }
    }
}
