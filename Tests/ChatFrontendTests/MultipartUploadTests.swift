import ChatTesting
import Foundation
import NIOCore
import Testing

@testable import ChatFrontend

/// The multipart reader and its staging file, without a server: what reaches
/// the disk, in which pieces, and what a refusal leaves behind.
@Suite struct MultipartUploads {
    static func body(fields: [String: String], fileName: String?, file: Data) -> Data {
        var body = Data()
        for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
            body += Data("--b\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
        }
        if let fileName {
            body += Data("--b\r\nContent-Disposition: form-data; name=\"file_attachment\"; filename=\"\(fileName)\"\r\n\r\n".utf8)
            body += file
            body += Data("\r\n".utf8)
        }
        return body + Data("--b--\r\n".utf8)
    }

    /// Reads `body` as the network would hand it over, in pieces of `chunk` bytes.
    static func read(_ body: Data, into path: String, maxFileBytes: Int = 10 << 20, chunk: Int = 100_000) async throws -> MultipartUpload {
        let staging = StagingFile(path: path)
        let reader = MultipartUpload(boundary: "b", staging: staging, stagingName: "staged", maxFileBytes: maxFileBytes, maxFieldBytes: 1 << 20)
        var offset = 0
        while offset < body.count, !reader.refused {
            let end = min(offset + chunk, body.count)
            try await reader.feed(ByteBuffer(bytes: body[offset..<end]))
            offset = end
        }
        await staging.close()
        return reader
    }

    static func withDirectory(_ body: (String) async throws -> Void) async throws {
        let dir = try Cluster.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await body(dir)
    }

    @Test func aFileOfSeveralWritesIsStagedWholeAndPrivate() async throws {
        try await Self.withDirectory { dir in
            // 3 MiB, CR and LF bytes throughout: the parser splits at each, the reader writes 1 MiB at a time.
            let file = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) })
            let path = dir + "/staged"
            let reader = try await Self.read(Self.body(fields: ["content": "hi"], fileName: "x.bin", file: file), into: path)
            #expect(reader.upload.fields == ["content": "hi"])
            #expect(reader.upload.stagingName == "staged")
            #expect(reader.upload.fileName == "x.bin")
            #expect(reader.upload.fileSize == file.count)
            #expect(!reader.inPart && !reader.refused)
            #expect(FileManager.default.contents(atPath: path) == file)
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
    }

    /// MultipartKit 4.7.1 traps on a byte >= 0x80 in a part header's name;
    /// the reader refuses it first, in any header and however the body is split.
    @Test func aNonASCIIByteInAPartHeaderNameIsRefused() async throws {
        try await Self.withDirectory { dir in
            let field = Data("Content-Disposition: form-data; name=\"content\"\r\n".utf8)
            let bodies: [Data] = [
                Data("--b\r\n".utf8) + Data([0x80]) + Data("--b--\r\n".utf8),
                Data("--b\r\nContent-".utf8) + Data([0xFF]) + Data("Disposition: x\r\n\r\nhi\r\n--b--\r\n".utf8),
                Data("--b\r\n".utf8) + field + Data([0xC3, 0xA9]) + Data(": x\r\n\r\nhi\r\n--b--\r\n".utf8),
                Data("--b\r\n".utf8) + field + Data("\r\nhi\r\n--b\r\n".utf8) + Data([0x80]) + Data("\r\n--b--\r\n".utf8),
                Data("x--b\r\n".utf8) + Data([0x80]) + Data(": 1\r\n\r\n--b--\r\n".utf8),
            ]
            for (index, body) in bodies.enumerated() {
                for chunk in [1, 3, 100_000] {
                    await #expect(throws: APIError.self, "body \(index), pieces of \(chunk)") {
                        try await Self.read(body, into: dir + "/staged-\(index)-\(chunk)", chunk: chunk)
                    }
                }
            }
            // In a header's value (a browser's UTF-8 file name) and in a part's body, such bytes are fine.
            let reader = try await Self.read(Self.body(fields: ["content": "é"], fileName: "é.txt", file: Data([0x80, 0xFF, 13, 10, 0x80])), into: dir + "/staged")
            #expect(reader.upload.fileName == "é.txt")
            #expect(reader.upload.fields == ["content": "é"])
            #expect(FileManager.default.contents(atPath: dir + "/staged") == Data([0x80, 0xFF, 13, 10, 0x80]))
        }
    }

    /// Random bodies built from multipart's pieces and random bytes, split at
    /// random: the reader refuses or reads each, and the process survives
    /// (a trap in the parser ends the test run). Seeded: a failure repeats.
    @Test func randomBodiesNeverTrapTheParser() async throws {
        try await Self.withDirectory { dir in
            var random = SeededRandom(seed: 0xC4A7D)
            let pieces = ["--b", "\r\n", "\r", "\n", "-", ":", " ", "x", "Content-Disposition: form-data; name=\"content\"", "name=\"file_attachment\"; filename=\"a\"", "--b--"]
            var refused = 0
            var read = 0
            for iteration in 0..<3000 {
                // Most open with a delimiter, so that the pieces after it are part headers.
                var body: [UInt8] = Int.random(in: 0..<4, using: &random) == 0 ? [] : Array("--b\r\n".utf8)
                for _ in 0..<Int.random(in: 1...24, using: &random) {
                    if Bool.random(using: &random) {
                        body += Array(pieces.randomElement(using: &random)!.utf8)
                    } else {
                        body.append(UInt8.random(in: 0...255, using: &random))
                    }
                }
                do {
                    _ = try await Self.read(Data(body), into: dir + "/staged-\(iteration)", chunk: Int.random(in: 1...32, using: &random))
                    read += 1
                } catch let error as APIError where error.status == .badRequest && String(decoding: error.body, as: UTF8.self).contains("not ASCII") {
                    refused += 1
                } catch {
                    // The parser's own syntax errors.
                }
            }
            // Both sides of the guard were reached.
            #expect(refused > 50)
            #expect(read > 50)
        }
    }

    @Test func anEmptyFilePartLeavesNoFile() async throws {
        try await Self.withDirectory { dir in
            let reader = try await Self.read(Self.body(fields: [:], fileName: "empty.txt", file: Data()), into: dir + "/staged")
            #expect(reader.upload.stagingName == "staged")
            #expect(reader.upload.fileSize == 0)
            #expect(!FileManager.default.fileExists(atPath: dir + "/staged"))
        }
    }

    @Test func aFileOverTheLimitStopsTheReading() async throws {
        try await Self.withDirectory { dir in
            let file = Data(count: 3 << 20)
            let reader = try await Self.read(Self.body(fields: [:], fileName: "big.bin", file: file), into: dir + "/staged", maxFileBytes: 1 << 20)
            #expect(reader.upload.tooLarge)
            #expect(reader.refused)
            // Nothing past the limit was written, and the rest of the body was never read.
            let size = (try? FileManager.default.attributesOfItem(atPath: dir + "/staged")[.size] as? Int) ?? 0
            #expect(size <= 1 << 20)
        }
    }

    @Test func aStagingFileThatCannotBeCreatedIsAWriteFailure() async throws {
        try await Self.withDirectory { dir in
            let reader = try await Self.read(Self.body(fields: [:], fileName: "x.bin", file: Data(count: 10)), into: dir + "/missing/staged")
            #expect(reader.upload.writeFailed)
        }
    }
}
