import ChatWire
import Testing

/// `file.chunk` and `file.read` bodies: raw bytes behind a one-line header.
@Suite struct FileTransferTests {
    let id = "0b7a7d52-4c1e-4f7e-9a43-2a6f0f5d8e11"

    @Test func aChunkCarriesItsBytesUnchangedAfterTheHeader() throws {
        // Every byte value, newlines and spaces included: the header ends at the first newline.
        let bytes = (0..<1000).map { UInt8($0 % 256) }
        let chunk = FileChunk(uploadID: id, offset: 786_432, bytes: bytes)
        let body = chunk.encode()
        #expect(body.starts(with: Array("\(id) 786432\n".utf8)))
        #expect(body.count == id.utf8.count + " 786432\n".utf8.count + bytes.count)
        #expect(try FileChunk(body: body) == chunk)
        let empty = FileChunk(uploadID: id, offset: 0, bytes: [])
        #expect(try FileChunk(body: empty.encode()) == empty)
    }

    @Test func aChunkHeaderThatCouldNameAnotherFileOrPlaceIsRefused() {
        for header in ["../etc 0", "a/b 0", ". 0", " 0", "\(id) -1", "\(id) x", "\(id)", "\(id) 0 1", "\(id) 99999999999999999999"] {
            #expect(throws: WireError.self, "\(header)") { try FileChunk(body: Array("\(header)\nbytes".utf8)) }
        }
        // No newline within the header's bound: not a chunk.
        #expect(throws: WireError.self) { try FileChunk(body: Array(repeating: UInt8(ascii: "a"), count: 300)) }
    }

    @Test func aReadNamesAHashARangeAndAtMostOneChunk() throws {
        let hash = String(repeating: "ab", count: 32)
        let read = FileRead(hash: hash, offset: 262_144, length: FileTransfer.chunkBytes)
        #expect(read.encode() == Array("\(hash) 262144 262144".utf8))
        #expect(try FileRead(body: read.encode()) == read)
        let refused = [
            "\(hash) 0 0", "\(hash) 0 \(FileTransfer.chunkBytes + 1)", "\(hash) -1 10", "\(hash.uppercased()) 0 10",
            "\(hash.dropLast()) 0 10", "../../etc/passwd 0 10", "\(hash) 0", "\(hash) 0 10 1",
        ]
        for body in refused {
            #expect(throws: WireError.self, "\(body)") { try FileRead(body: Array(body.utf8)) }
        }
    }

    /// An offset near `Int64.max` would overflow `offset + count` in the
    /// files worker (a trap, a crash, the chunk resent to the replacement):
    /// both parsers refuse any past `maxOffset`.
    @Test func offsetsPastTheCapAreRefusedByBothParsers() throws {
        let hash = String(repeating: "ab", count: 32)
        for offset in [Int64.max, Int64.max - 1, FileTransfer.maxOffset + 1] {
            #expect(throws: WireError.self, "\(offset)") { try FileChunk(body: Array("\(id) \(offset)\nx".utf8)) }
            #expect(throws: WireError.self, "\(offset)") { try FileRead(body: Array("\(hash) \(offset) 10".utf8)) }
        }
        #expect(try FileChunk(body: Array("\(id) \(FileTransfer.maxOffset)\nx".utf8)).offset == FileTransfer.maxOffset)
        #expect(try FileRead(body: Array("\(hash) \(FileTransfer.maxOffset) 10".utf8)).offset == FileTransfer.maxOffset)
    }

    @Test func theNewKindsGoToTheFilesRole() {
        #expect(CommandKind.fileChunk.role == .files && CommandKind.fileRead.role == .files)
        #expect(CommandKind(rawValue: "file.chunk") == .fileChunk && CommandKind(rawValue: "file.read") == .fileRead)
    }
}
