import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 5: attachments over real sockets: downloads, memory, news (names: ChatFrontendTests.Files).
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

        static func upload(_ server: TestServer, token: String, room: String, fields: [String: String], fileName: String?, file: Data?, closed: Bool = true) async throws -> TestServer.HTTPResult {
            try await server.request(
                "POST", "/api/chat/rooms/\(room)/messages/", token: token,
                body: multipart(fields: fields, fileName: fileName, file: file, closed: closed),
                headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"]
            )
        }

        static func rssKiB(_ pid: Int32) -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }

        // A 1×1 PNG.
        static let png = Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")!

        @Test func uploadDownloadAndRefusals() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            let t = try await Steps.users(server, "alice", "bob", "eve")
            let room = try await Steps.room(server, token: t[0], members: ["bob"])
            let bobSocket = try server.webSocket("/ws/chat/\(room)/", token: t[1])

            // A text file with a hostile name: stored by hash, the name returned as given.
            let text = Data("hello, attachment\n".utf8)
            let posted = try await Self.upload(server, token: t[0], room: room, fields: ["content": "see file"], fileName: "../../etc/passwd", file: text)
            #expect(posted.status == 201, "\(posted.text)")
            #expect(posted.object["message_type"] as? String == "file")
            #expect(posted.object["file_name"] as? String == "../../etc/passwd")
            #expect(posted.object["file_size"] as? Int == text.count)
            let url = try #require(posted.object["file_attachment"] as? String)
            #expect(url.hasSuffix("/download/"))
            #expect(try bobSocket.receiveMessage(content: "see file")?["file_attachment"] as? String == url)
            let stored = try FileManager.default.subpathsOfDirectory(atPath: server.dataDir + "/files")
            #expect(stored.allSatisfy { $0.range(of: "^[0-9a-f]{2}(/[0-9a-f]{64})?$", options: .regularExpression) != nil }, "\(stored)")

            let download = try await server.request("GET", url, token: t[1])
            #expect(download.status == 200)
            #expect(download.body == text)
            #expect(download.headers["content-length"] == String(text.count))
            // Only the name's last segment is served back, never a path.
            #expect(download.headers["content-disposition"] == "attachment; filename=\"passwd\"; filename*=UTF-8''passwd")
            #expect(download.headers["x-content-type-options"] == "nosniff")
            let range = try await server.request("GET", url, token: t[1], headers: ["Range": "bytes=7-16"])
            #expect(range.status == 206)
            #expect(range.body == text.subdata(in: 7..<17))
            #expect(range.headers["content-range"] == "bytes 7-16/\(text.count)")
            #expect(try await server.request("GET", url, token: t[1], headers: ["Range": "bytes=999-"]).status == 416)

            // Others may not download it; nor anyone without a token.
            #expect(try await server.request("GET", url, token: t[2]).status == 403)
            #expect(try await server.request("GET", url).status == 401)
            #expect(try await server.request("GET", "/api/chat/rooms/\(room)/messages/\(IDs.uuid7())/download/", token: t[0]).status == 404)

            // An image: the bytes must be one.
            let image = try await Self.upload(server, token: t[0], room: room, fields: ["message_type": "image"], fileName: "dot.png", file: Self.png)
            #expect(image.status == 201, "\(image.text)")
            let imageDownload = try await server.request("GET", image.object["file_attachment"] as? String ?? "", token: t[0])
            #expect(imageDownload.body == Self.png)
            #expect(imageDownload.headers["content-type"] == "image/png")
            let fake = try await Self.upload(server, token: t[0], room: room, fields: ["message_type": "image"], fileName: "fake.png", file: text)
            #expect(fake.status == 400)
            #expect(fake.object["file_attachment"] != nil)

            // Broken multipart bodies.
            let unclosed = try await Self.upload(server, token: t[0], room: room, fields: [:], fileName: "a.txt", file: text, closed: false)
            #expect(unclosed.status == 400)
            let noBoundary = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: t[0], body: Data("x".utf8), headers: ["Content-Type": "multipart/form-data"])
            #expect(noBoundary.status == 400)
            #expect(try await Self.upload(server, token: t[2], room: room, fields: [:], fileName: "a.txt", file: text).status == 403)

            // 30 MB: refused with 413, without the frontend holding it in memory.
            let frontend = try #require(server.childPIDs(matching: "frontend").first)
            let before = Self.rssKiB(frontend)
            let huge = try await Self.upload(server, token: t[0], room: room, fields: [:], fileName: "huge.bin", file: Data(count: 30 << 20))
            #expect(huge.status == 413)
            let growth = Self.rssKiB(frontend) - before
            #expect(growth < 10 * 1024, "the frontend grew by \(growth) KiB")
            // Nothing of the refused uploads was stored.
            #expect(try await Steps.contents(server, token: t[0], room: room) == ["see file", ""])
            #expect((try? FileManager.default.contentsOfDirectory(atPath: server.dataDir + "/staging"))?.isEmpty ?? true)
        }
    }
}
