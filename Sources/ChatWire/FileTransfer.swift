/// Attachments over the bus (`attachments: bus`): a frontend that does not
/// share the files worker's disk sends an upload in `file.chunk` commands and
/// reads a download with `file.read` commands. Both bodies are raw bytes
/// behind a one-line text header, not JSON or base64, so a chunk costs its
/// own size on the bus and nothing more.
public enum FileTransfer {
    /// Most bytes one `file.chunk` carries or one `file.read` asks for.
    /// ZeroMQ's high-water marks count messages, not bytes: what a transfer
    /// can park in the broker is its window × this. 256 KiB keeps that at
    /// 1 MiB a transfer and a files worker's batch (16 commands) at 4 MiB,
    /// while a 25 MiB upload is 100 commands, not the 400 of 64 KiB pieces:
    /// each command costs a round trip through the broker and a few copies
    /// (and, on a CURVE bus, one encryption per message), so fewer, larger
    /// ones are cheaper per byte up to the point where memory matters.
    public static let chunkBytes = 256 << 10

    /// Commands of one transfer in flight at once: enough to keep the link
    /// busy while one chunk is being written or read (a round trip on a LAN
    /// is well under the time a 256 KiB disk write takes), few enough that a
    /// slow client or worker holds at most this many chunks per transfer.
    public static let window = 4

    /// Largest offset either command may name: far beyond any attachment
    /// (1 PiB), and far enough below `Int64.max` that an offset plus a
    /// chunk's length cannot overflow; a larger one is refused as malformed.
    public static let maxOffset: Int64 = 1 << 50
}

/// The body of `file.chunk`: `<upload id> <offset>\n` and then the chunk's
/// bytes. The files worker writes them at `offset` of its staging file
/// `<upload id>`; writing the same bytes at the same offset again is
/// harmless, so a resend after a worker's death needs no bookkeeping.
public struct FileChunk: Sendable, Equatable {
    /// The staging name the later `file.store` names (a UUID the frontend chose).
    public var uploadID: String
    public var offset: Int64
    public var bytes: [UInt8]

    public init(uploadID: String, offset: Int64, bytes: [UInt8]) {
        self.uploadID = uploadID
        self.offset = offset
        self.bytes = bytes
    }

    public func encode() -> [UInt8] {
        var body = Array("\(uploadID) \(offset)\n".utf8)
        body.reserveCapacity(body.count + bytes.count)
        body += bytes
        return body
    }

    /// Reads a body; refuses a header that is not `<id> <offset>` with an id
    /// of letters, digits and `-` (it names a file) and an offset from 0 to
    /// `FileTransfer.maxOffset`.
    public init(body: [UInt8]) throws(WireError) {
        // An id and a decimal Int64 fit in far fewer bytes than this.
        guard let newline = body.prefix(128).firstIndex(of: UInt8(ascii: "\n")) else { throw .malformed("file.chunk header") }
        let fields = body[..<newline].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard fields.count == 2, FileTransferName.isSafe(fields[0]),
            let offset = Int64(String(decoding: fields[1], as: UTF8.self)), (0...FileTransfer.maxOffset).contains(offset)
        else { throw .malformed("file.chunk header") }
        self.uploadID = String(decoding: fields[0], as: UTF8.self)
        self.offset = offset
        self.bytes = Array(body[(newline + 1)...])
    }
}

/// The body of `file.read`: `<sha-256 hex> <offset> <length>`. The reply's
/// body is the blob's bytes from `offset`, `length` of them or fewer at its
/// end; the frontend asks only for a blob `file.open` just authorised.
public struct FileRead: Sendable, Equatable {
    public var hash: String
    public var offset: Int64
    public var length: Int

    public init(hash: String, offset: Int64, length: Int) {
        self.hash = hash
        self.offset = offset
        self.length = length
    }

    public func encode() -> [UInt8] { Array("\(hash) \(offset) \(length)".utf8) }

    /// Reads a body; refuses anything but a lowercase 64-digit hash (it
    /// names a file), an offset from 0 to `FileTransfer.maxOffset` and a
    /// length from 1 to `chunkBytes`.
    public init(body: [UInt8]) throws(WireError) {
        let fields = body.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard fields.count == 3, fields[0].count == 64, fields[0].allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
            let offset = Int64(String(decoding: fields[1], as: UTF8.self)), (0...FileTransfer.maxOffset).contains(offset),
            let length = Int(String(decoding: fields[2], as: UTF8.self)), (1...FileTransfer.chunkBytes).contains(length)
        else { throw .malformed("file.read") }
        self.hash = String(decoding: fields[0], as: UTF8.self)
        self.offset = offset
        self.length = length
    }
}

enum FileTransferName {
    /// 1 to 64 letters, digits and `-`: never `.`, `/` or empty, so it can
    /// only name a file inside the staging directory.
    static func isSafe(_ name: some Collection<UInt8>) -> Bool {
        (1...64).contains(name.count) && name.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == UInt8(ascii: "-")
        }
    }
}
