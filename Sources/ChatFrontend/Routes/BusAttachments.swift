import ChatBus
import ChatWire
import Hummingbird
import NIOCore
import NIOFileSystem

/// Attachment bytes over the bus (`attachments: bus`): for a frontend whose
/// host does not share the files worker's disk. An upload, already staged on
/// this host's disk (its size limit enforced while it streamed in), goes to
/// the files worker in `file.chunk` commands; a download comes back in
/// `file.read` replies. Each transfer keeps at most `FileTransfer.window`
/// commands in flight, so it holds at most that many chunks in this process
/// and in the broker, whatever the file's size.
///
/// A files worker's death loses nothing: the bus client's pending table
/// resends what it had not answered to its replacement (a chunk rewrites the
/// same bytes, a read reads them again), and the transfer goes on.
struct BusAttachments: Sendable {
    let bus: BusClient
    /// The caller as the bus carries it.
    let user: [UInt8]

    /// Sends the first `size` bytes of the file at `path` as the chunks of
    /// upload `uploadID`, and returns once the files worker acknowledged all.
    func send(path: String, size: Int64, uploadID: String) async throws {
        try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(path), options: .init(closeOnExec: true)) { handle in
            try await withThrowingTaskGroup(of: Void.self) { group in
                var offset: Int64 = 0
                var inFlight = 0
                // Each chunk read just before it is sent, once the window has
                // room: `readChunks` reads ~8 ahead, beyond the window.
                while offset < size {
                    if inFlight == FileTransfer.window {
                        _ = try await group.next()
                        inFlight -= 1
                    }
                    let length = min(Int64(FileTransfer.chunkBytes), size - offset)
                    let piece = try await handle.readChunk(fromAbsoluteOffset: offset, length: .bytes(length))
                    // The file is shorter than `size`: refused below.
                    guard piece.readableBytes > 0 else { break }
                    let body = FileChunk(uploadID: uploadID, offset: offset, bytes: Array(piece.readableBytesView)).encode()
                    offset += Int64(piece.readableBytes)
                    group.addTask { _ = try await self.command(.fileChunk, body: body) }
                    inFlight += 1
                }
                try await group.waitForAll()
                // The staged file changed under us: never store a short upload.
                guard offset == size else { throw APIError(.serviceUnavailable, detail: "The upload could not be written, try again.") }
            }
        }
    }

    /// Writes bytes `range` of blob `hash` to `writer`, the reads a window
    /// ahead of the writes: the next read is asked for once the oldest is
    /// written, so the chunk being written counts in the window (never more
    /// than `window` held), and a client that reads slowly holds the window
    /// (its writes wait) rather than more chunks piling up.
    func stream(hash: String, range: Range<Int64>, to writer: inout any ResponseBodyWriter) async throws {
        var next = range.lowerBound
        var reads: [Task<[UInt8], any Error>] = []
        defer { for read in reads { read.cancel() } }
        func ask() {
            let request = FileRead(hash: hash, offset: next, length: Int(min(Int64(FileTransfer.chunkBytes), range.upperBound - next)))
            next += Int64(request.length)
            reads.append(Task { [self] in
                let bytes = try await command(.fileRead, body: request.encode())
                // A blob shorter than file.open said: the response cannot be completed.
                guard bytes.count == request.length else { throw APIError.unavailable }
                return bytes
            })
        }
        while next < range.upperBound && reads.count < FileTransfer.window { ask() }
        while !reads.isEmpty {
            let bytes = try await reads.removeFirst().value
            try await writer.write(ByteBuffer(bytes: bytes))
            if next < range.upperBound { ask() }
        }
    }

    /// One command to the files worker: its reply's body, or the refusal
    /// (503 when the bus gave up) as the client's error.
    private func command(_ kind: CommandKind, body: [UInt8]) async throws -> [UInt8] {
        switch await bus.request(kind, to: .role(.files), user: user, body: body) {
        case .success(let reply) where [.ok, .noContent].contains(reply.status):
            return reply.body
        case .success(let reply):
            let (status, body) = APIError.rendered(reply)
            throw APIError(status, body: body)
        case .failure:
            throw APIError.unavailable
        }
    }
}
