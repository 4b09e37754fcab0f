import ChatCore
import ChatMetrics
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 15: attachments across hosts. A frontend host and a workers host
    /// with separate data directories (two supervisors over a TCP bus on
    /// loopback): the bytes cross the bus (`attachments: bus`, the default
    /// of `run: frontend`), and the frontend host's disk keeps none of them.
    @Suite struct AttachmentHosts {
        /// A `run: workers` supervisor with a data directory of its own.
        final class WorkersHost {
            let dir: String
            let process = Process()

            init(bus: String) throws {
                dir = try TestServer.temporaryDirectory()
                process.executableURL = URL(fileURLWithPath: try TestServer.binary())
                process.arguments = ["serve", "--die-with-parent"]
                process.environment = ProcessInfo.processInfo.environment.merging([
                    "CHAT_RUN": "workers", "CHAT_BUS": bus, "CHAT_DATA_DIR": dir, "CHAT_STORE_WORKERS": "1", "CHAT_LOG_LEVEL": "info",
                    // The test stops the files worker (SIGSTOP) for a moment:
                    // the supervisor must not replace it as hung meanwhile.
                    "CHAT_HANG_TIMEOUT_SECONDS": "60",
                ].merging(try PostgresServer.environment(forDataDir: dir)) { $1 }) { $1 }
                _ = FileManager.default.createFile(atPath: dir + "/workers.log", contents: nil)
                let log = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/workers.log"))
                process.standardOutput = log
                process.standardError = log
                try process.run()
            }

            deinit {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
                PostgresServer.dropDatabase(forDataDir: dir)
                try? FileManager.default.removeItem(atPath: dir)
            }

            /// The serving files worker's pid, from this host's `ctl status`.
            func filesWorker() -> Int32? {
                guard let answer = try? TestServer.control(dir + "/run/control.sock", "status"),
                    let status = try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]
                else { return nil }
                let rows = status["children"] as? [[String: Any]] ?? []
                return (rows.first { $0["child"] as? String == "files.0" }?["pid"] as? Int).map(Int32.init)
            }

            /// Kills the files worker and waits for the one that replaces it.
            func killFilesWorker(_ pid: Int32, server: TestServer) async throws {
                #expect(kill(pid, SIGKILL) == 0)
                try await server.waitUntil(timeout: 15, "a new files worker") { filesWorker().map { $0 != pid } ?? false }
            }

            /// Regular files under `files/`: the blobs this host holds.
            var blobs: [String: Int] { AttachmentHosts.regularFiles(dir + "/files") }
        }

        static func regularFiles(_ directory: String) -> [String: Int] {
            var found: [String: Int] = [:]
            for path in (try? FileManager.default.subpathsOfDirectory(atPath: directory)) ?? [] {
                let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + path)
                if attributes?[.type] as? FileAttributeType == .typeRegular { found[path] = attributes?[.size] as? Int ?? 0 }
            }
            return found
        }

        /// `count` bytes no two chunks of which are alike (xorshift), so a
        /// chunk written at the wrong offset cannot pass for the right one.
        static func pattern(_ count: Int, seed: UInt64) -> Data {
            var state = seed | 1
            var bytes = [UInt8](repeating: 0, count: count)
            for index in stride(from: 0, to: count, by: 8) {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                for offset in 0..<min(8, count - index) { bytes[index + offset] = UInt8(truncatingIfNeeded: state >> (8 * offset)) }
            }
            return Data(bytes)
        }

        @Test func uploadsAndDownloadsCrossTheBusAndSurviveTheFilesWorkersDeath() async throws {
            // Events in and out, and an in and an out port for each of 4 queues.
            let bus = "tcp://127.0.0.1:\(try TestServer.freePorts(2 + 2 * 4))"
            let workers = try WorkersHost(bus: bus)
            let server = try await TestServer.start(environment: ["CHAT_RUN": "frontend", "CHAT_BUS": bus])
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "eve")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])

            // An image, and a file of many chunks (6 MiB, 24 of 256 KiB and a piece).
            let image = try await Files.upload(server, token: t[0], room: room, fields: ["message_type": "image"], fileName: "dot.png", file: Files.png)
            #expect(image.status == 201, "\(image.text)")
            let imageURL = try #require(image.object["file_attachment"] as? String)
            let imageBack = try await server.request("GET", imageURL, token: t[1])
            #expect(imageBack.status == 200 && imageBack.body == Files.png)
            #expect(imageBack.headers["content-type"] == "image/png")
            let big = Self.pattern(6 << 20 + 1234, seed: 1)
            let posted = try await Files.upload(server, token: t[0], room: room, fields: ["content": "big"], fileName: "big.bin", file: big)
            #expect(posted.status == 201, "\(posted.text)")
            #expect(posted.object["file_size"] as? Int == big.count)
            let url = try #require(posted.object["file_attachment"] as? String)
            let back = try await server.request("GET", url, token: t[1])
            #expect(back.status == 200 && back.headers["content-length"] == String(big.count))
            #expect(back.body == big, "the download differs from the upload")
            // A range across a chunk boundary.
            let range = try await server.request("GET", url, token: t[1], headers: ["Range": "bytes=262000-600000"])
            #expect(range.status == 206 && range.body == big.subdata(in: 262_000..<600_001))
            #expect(range.headers["content-range"] == "bytes 262000-600000/\(big.count)")

            // Only members: the same answers as on one host.
            #expect(try await server.request("GET", url, token: t[2]).status == 403)
            #expect(try await Files.upload(server, token: t[2], room: room, fields: [:], fileName: "a.txt", file: Data("x".utf8)).status == 403)

            // The blobs are on the workers host; the frontend host keeps none, staged or stored.
            #expect(Set(workers.blobs.values) == [Files.png.count, big.count])
            #expect(Self.regularFiles(server.dataDir + "/files").isEmpty)
            #expect(Self.regularFiles(server.dataDir + "/staging").isEmpty)

            try await downloadSurvivesTheFilesWorkersDeath(server, workers, token: t[1], room: room, uploader: t[0])
            try await uploadSurvivesTheFilesWorkersDeath(server, workers, token: t[0], room: room)
            #expect(Self.regularFiles(server.dataDir + "/files").isEmpty)
            #expect(Self.regularFiles(server.dataDir + "/staging").isEmpty)
        }

        /// HEAD of a download answers its headers and reads nothing over the
        /// bus: the files worker's `chatd_file_bytes_read_total` counts only
        /// the GET of a second, small attachment made after the HEAD (a
        /// scrape that shows the GET's bytes was taken after the HEAD ended).
        @Test func headOfADownloadReadsNothingOverTheBus() async throws {
            let server = try await TestServer.start(environment: ["CHAT_ATTACHMENTS": "bus"])
            defer { server.stop() }
            let t = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: t[0], members: [])
            let big = Self.pattern(2 << 20, seed: 3)
            let small = Self.pattern(1000, seed: 4)
            var urls: [String] = []
            for (name, file) in [("big.bin", big), ("small.bin", small)] {
                let posted = try await Files.upload(server, token: t[0], room: room, fields: [:], fileName: name, file: file)
                #expect(posted.status == 201, "\(posted.text)")
                urls.append(try #require(posted.object["file_attachment"] as? String))
            }
            let head = try await server.request("HEAD", urls[0], token: t[0])
            #expect(head.status == 200 && head.headers["content-length"] == String(big.count) && head.body.isEmpty)
            let ranged = try await server.request("HEAD", urls[0], token: t[0], headers: ["Range": "bytes=10-19"])
            #expect(ranged.status == 206 && ranged.headers["content-range"] == "bytes 10-19/\(big.count)")
            let back = try await server.request("GET", urls[1], token: t[0])
            #expect(back.status == 200 && back.body == small)
            let read = "chatd_file_bytes_read_total"
            let scraped = try await EndToEnd.Metrics.waitForScrape(server, "the GET's bytes in \(read)") { $0.sum(read) >= Double(small.count) }
            #expect(scraped.sum(read) == Double(small.count), "HEAD read bytes over the bus")
        }

        /// `filesWorkers: 0` (every workers host but the files host): the
        /// supervisor starts the other roles and their standbys, and no
        /// `files.0` nor `standby.files`, which would take some of another
        /// host's upload chunks from the shared queue.
        @Test func filesWorkersZeroStartsNoFilesWorker() async throws {
            // No files worker on this one host: /healthz says so (503), which is right.
            let server = try await TestServer.start(environment: ["CHAT_FILES_WORKERS": "0"], healthy: false)
            defer { server.stop() }
            var names: Set<String> = []
            try await server.waitUntil(timeout: 30, "the workers and their standbys") {
                let processes = try EndToEnd.Standby.Processes(server)
                names = Set(processes.children.keys).union(processes.standbys.keys)
                return names.isSuperset(of: ["store.0", "receipts.0", "search.0", "standby.store", "standby.search"])
            }
            #expect(!names.contains("files.0") && !names.contains("standby.files"), "\(names.sorted())")
        }

        /// A client reads a 10 MiB download slowly; the files worker is
        /// killed once it has 1 MiB: the frontend can be at most its window
        /// (1 MiB) and the two sockets' buffers (a few MiB) ahead of it, so
        /// the later reads go to the replacement, and the download completes
        /// whole, on the same connection.
        func downloadSurvivesTheFilesWorkersDeath(_ server: TestServer, _ workers: WorkersHost, token: String, room: String, uploader: String) async throws {
            let file = Self.pattern(10 << 20, seed: 2)
            let posted = try await Files.upload(server, token: uploader, room: room, fields: [:], fileName: "ten.bin", file: file)
            #expect(posted.status == 201, "\(posted.text)")
            let url = try #require(posted.object["file_attachment"] as? String)
            let victim = try #require(workers.filesWorker())

            let connection = try RawConnection(port: server.port)
            var small: Int32 = 64 << 10
            setsockopt(connection.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            connection.send(Array("GET \(url) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nConnection: close\r\n\r\n".utf8))
            let first = connection.read(timeout: 30) { $0.count >= 1 << 20 }
            #expect(first.status == 200 && !first.closed)
            try await workers.killFilesWorker(victim, server: server)
            let headEnd = try #require(first.bytes.firstRange(of: Array("\r\n\r\n".utf8))).upperBound
            let rest = connection.read(timeout: 60) { first.bytes.count + $0.count - headEnd >= file.count }
            let body = Data((first.bytes + rest.bytes)[headEnd...])
            #expect(body.count == file.count && body == file, "got \(body.count) of \(file.count) bytes after the files worker's death")
        }

        /// The files worker is killed while an upload's chunks arrive, some
        /// written to its staging file and not all: it is stopped before the
        /// upload, let go once the frontend has sent chunks (the upload's
        /// queue count in `ctl status`), stopped again when its staging file
        /// holds at least two chunks, and killed. The frontend resends what
        /// the dead one had not acknowledged to its replacement, which
        /// rewrites the same bytes at the same offsets, so the client's one
        /// request succeeds with nothing to retry. Bounded attempts: one
        /// whose chunks all land before the poll sees them is not a kill in
        /// the middle, and goes again with another file.
        func uploadSurvivesTheFilesWorkersDeath(_ server: TestServer, _ workers: WorkersHost, token: String, room: String) async throws {
            let staging = workers.dir + "/staging"
            var killedMidway = false
            for attempt in 0..<3 where !killedMidway {
                let file = Self.pattern(16 << 20 - attempt * 4096, seed: 10 + UInt64(attempt))
                let victim = try #require(workers.filesWorker())
                kill(victim, SIGSTOP)
                let upload = Task { try await Files.upload(server, token: token, room: room, fields: [:], fileName: "up\(attempt).bin", file: file) }
                try await server.waitUntil(timeout: 60, "the upload's chunks on the bus") {
                    ((try? server.status())?["queues"] as? [String: Any])?["files"] as? Int ?? 0 > 0
                }
                kill(victim, SIGCONT)
                let deadline = Date().addingTimeInterval(30)
                // Polling (a stat a turn, a yield between) until two chunks,
                // not all, are written: a sleep would let them all land.
                while Date() < deadline {
                    await Task.yield()
                    let written = Self.regularFiles(staging).filter { !$0.key.hasSuffix(".stored") }.values.max() ?? 0
                    if written >= 2 * (256 << 10) || workers.blobs.values.contains(file.count) {
                        kill(victim, SIGSTOP)
                        // Still partial once it is frozen: killed mid-upload.
                        killedMidway = Self.regularFiles(staging).contains { !$0.key.hasSuffix(".stored") && $0.value < file.count }
                        break
                    }
                }
                try await workers.killFilesWorker(victim, server: server)
                let posted = try await upload.value
                #expect(posted.status == 201, "\(posted.text)")
                let back = try await server.request("GET", posted.object["file_attachment"] as? String ?? "", token: token, timeout: 60)
                #expect(back.body == file, "attempt \(attempt): the stored upload differs")
            }
            #expect(killedMidway, "no attempt caught the upload's chunks half written")
        }
    }
}
