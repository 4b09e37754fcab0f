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
