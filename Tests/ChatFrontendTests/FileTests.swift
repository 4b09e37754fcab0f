import ChatCore
import Foundation
import Testing

/// Issue 5: attachments through the router: uploads staged with NIOFileSystem
/// and stored by the files worker (downloads, memory use and WebSocket news:
/// EndToEndTests.Files).
@Suite struct Files {
    static let boundary = "chatd-test-boundary-7MA4YWxkTrZu0gW"

    /// A multipart/form-data body with text fields and one file.
    static func multipart(fields: [String: String], fileName: String?, file: Data?, closed: Bool = true) -> Data {
        var body = Data()
        for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
            body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
        }
        if let fileName, let file {
            body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file_attachment\"; filename=\"\(fileName)\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8)
            body += file
            body += Data("\r\n".utf8)
        }
        if closed { body += Data("--\(boundary)--\r\n".utf8) }
        return body
    }

    static func upload(
        _ server: InProcessServer, token: String, room: String, fields: [String: String], fileName: String?, file: Data?, closed: Bool = true
    ) async throws -> InProcessServer.HTTPResult {
        try await server.request(
            "POST", "/api/chat/rooms/\(room)/messages/", token: token,
            body: multipart(fields: fields, fileName: fileName, file: file, closed: closed),
            headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"]
        )
    }

    /// Issue 10: an attachment's name is at most 255 characters; a longer one
    /// is refused before anything is stored.
    @Test func fileNamesAreBounded() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let bytes = Data("hello".utf8)
            let longest = String(repeating: "é", count: 251) + ".txt"
            let ok = try await Self.upload(server, token: t[0], room: room, fields: ["content": "fits"], fileName: longest, file: bytes)
            #expect(ok.status == 201, "\(ok.text)")
            #expect(ok.object["file_name"] as? String == longest)
            for name in [String(repeating: "é", count: 252) + ".txt", String(repeating: "n", count: 60_000)] {
                let refused = try await Self.upload(server, token: t[0], room: room, fields: ["content": "too long"], fileName: name, file: bytes)
                #expect(refused.status == 400, "\(refused.text.prefix(200))")
                #expect(refused.object["file_attachment"] is [String], "\(refused.text.prefix(200))")
            }
            // A long name before a large file: refused as soon as the part header is read.
            let big = try await Self.upload(server, token: t[0], room: room, fields: [:], fileName: String(repeating: "n", count: 300), file: Data(count: 20 << 20))
            #expect(big.status == 400)
            #expect(big.object["file_attachment"] is [String])
            #expect(try await Steps.contents(server, token: t[1], room: room) == ["fits"])
            #expect((try? FileManager.default.contentsOfDirectory(atPath: server.dataDir + "/staging"))?.isEmpty ?? true)
        }
    }

    /// An empty file is refused as such (DRF's FileField wording), before the files worker sees it.
    @Test func anEmptyFileIsRefusedAsEmpty() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice")
            let room = try await Steps.room(server, token: t[0], members: [])
            let empty = try await Self.upload(server, token: t[0], room: room, fields: ["content": "nothing"], fileName: "empty.txt", file: Data())
            #expect(empty.status == 400)
            #expect(empty.object["file_attachment"] as? [String] == ["The submitted file is empty."])
            #expect(try await Steps.contents(server, token: t[0], room: room) == [])
        }
    }

    /// An upload of several write batches is staged and stored whole; the
    /// download streams it back from disk, whole or a range, to participants only.
    @Test func largeUploadsRoundTripWholeAndInRanges() async throws {
        try await InProcessServer.run { server in
            let t = try await Steps.users(server, "alice", "bob", "eve")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            // 2.5 MiB with every CR and LF a multipart parser splits at: three staging writes, forty 64 KiB reads.
            let bytes = Data((0..<(5 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let posted = try await Self.upload(server, token: t[0], room: room, fields: ["content": "data"], fileName: "data.bin", file: bytes)
            #expect(posted.status == 201, "\(posted.text)")
            #expect(posted.object["file_size"] as? Int == bytes.count)
            let url = try #require(posted.object["file_attachment"] as? String)
            let path = url.replacingOccurrences(of: "http://127.0.0.1:\(server.port)", with: "")
            let whole = try await server.request("GET", path, token: t[1])
            #expect(whole.status == 200)
            #expect(whole.body == bytes)
            #expect(whole.headers["content-length"] == String(bytes.count))
            let range = try await server.request("GET", path, token: t[1], headers: ["Range": "bytes=70000-140001"])
            #expect(range.status == 206)
            #expect(range.body == bytes.subdata(in: 70_000..<140_002))
            #expect(range.headers["content-range"] == "bytes 70000-140001/\(bytes.count)")
            let beyond = try await server.request("GET", path, token: t[1], headers: ["Range": "bytes=\(bytes.count)-"])
            #expect(beyond.status == 416)
            // RFC 9110 §14.2: a unit the server does not know is ignored, the whole file served.
            let items = try await server.request("GET", path, token: t[1], headers: ["Range": "items=0-1"])
            #expect(items.status == 200)
            #expect(items.body == bytes)
            #expect(items.headers["content-range"] == nil)
            let upper = try await server.request("GET", path, token: t[1], headers: ["Range": "Bytes=0-1"])
            #expect(upper.status == 206)
            #expect(upper.body == bytes.prefix(2))
            #expect(try await server.request("GET", path, token: t[2]).status == 403)
            #expect((try? FileManager.default.contentsOfDirectory(atPath: server.dataDir + "/staging"))?.isEmpty ?? true)
        }
    }

    /// Issue 15: `attachments: bus` on one host (the path a frontend host
    /// without the files worker's disk takes): the upload goes to the files
    /// worker in chunks and comes back in reads, whole and in ranges that
    /// cross a chunk's edge; nothing but the worker's `.stored` marker stays
    /// staged, and a non-member is refused as on the local path.
    @Test func overTheBusAnUploadOfManyChunksRoundTrips() async throws {
        try await InProcessServer.run(configure: { $0.attachments = .bus }) { server in
            let t = try await Steps.users(server, "alice", "bob", "eve")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            // Five chunks of 256 KiB and a piece.
            let bytes = Data((0..<(5 << 18) + 777).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 11) })
            let posted = try await Self.upload(server, token: t[0], room: room, fields: ["content": "bus"], fileName: "bus.bin", file: bytes)
            #expect(posted.status == 201, "\(posted.text)")
            #expect(posted.object["file_size"] as? Int == bytes.count)
            let url = try #require(posted.object["file_attachment"] as? String)
            let path = url.replacingOccurrences(of: "http://127.0.0.1:\(server.port)", with: "")
            let whole = try await server.request("GET", path, token: t[1])
            #expect(whole.status == 200 && whole.body == bytes)
            #expect(whole.headers["content-length"] == String(bytes.count))
            let range = try await server.request("GET", path, token: t[1], headers: ["Range": "bytes=262100-800000"])
            #expect(range.status == 206 && range.body == bytes.subdata(in: 262_100..<800_001))
            let tail = try await server.request("GET", path, token: t[1], headers: ["Range": "bytes=-10"])
            #expect(tail.status == 206 && tail.body == bytes.suffix(10))
            #expect(try await server.request("GET", path, token: t[2]).status == 403)
            #expect(try await Self.upload(server, token: t[2], room: room, fields: [:], fileName: "a.txt", file: Data("x".utf8)).status == 403)
            let staged = (try? FileManager.default.contentsOfDirectory(atPath: server.dataDir + "/staging")) ?? []
            #expect(staged.allSatisfy { $0.hasSuffix(".stored") }, "\(staged)")
        }
    }
}
