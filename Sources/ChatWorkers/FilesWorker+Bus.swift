import ChatCore
import ChatStore
import ChatWire
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Attachments over the bus (`attachments: bus`, a frontend host without
/// this worker's disk): uploads arrive as `file.chunk` commands written into
/// this worker's staging directory, downloads leave as `file.read` replies.
/// `file.store` and `file.open` are the same commands either way.
///
/// Neither touches the database: the frontend asked `room.get` (upload) or
/// `file.open` (download) before the first chunk, and asks only for what
/// those allowed; the bus is the trusted side of the system.
extension FilesWorker {
    /// Writes one chunk at its offset of staging file `<upload id>`. The same
    /// chunk again rewrites the same bytes (a resend after this worker died
    /// or was slow); a chunk of an upload already stored is not written.
    func writeChunk(_ command: Command) throws -> Event {
        let chunk: FileChunk
        do { chunk = try FileChunk(body: command.body) } catch { throw StoreError(code: .badRequest, detail: "Malformed command body.") }
        // The same rule as `file.store`'s staging name: the frontend's UUID.
        guard IDs.canonical(chunk.uploadID) == chunk.uploadID else { throw StoreError(code: .badRequest, detail: "Bad staging name.") }
        guard chunk.bytes.count <= FileTransfer.chunkBytes else { throw StoreError(code: .badRequest, detail: "Chunk too large.") }
        // The frontend enforces the limit while it reads the client's body;
        // this bounds what any bus peer can make this disk hold.
        // Subtracting cannot overflow (the count is at most a chunk); adding could.
        guard chunk.offset <= Int64(config.maxUploadBytes) - Int64(chunk.bytes.count) else {
            throw StoreError(code: .badRequest, detail: "File too large")
        }
        let staging = (config.stagingDir as NSString).appendingPathComponent(chunk.uploadID)
        if access(staging + ".stored", F_OK) == 0 { return .reply(to: command, status: .noContent, body: []) }
        let fd = Glibc.open(staging, O_WRONLY | O_CREAT | O_CLOEXEC, PrivateFiles.fileMode)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var written = 0
        while written < chunk.bytes.count {
            let n = chunk.bytes.withUnsafeBytes { raw in
                pwrite(fd, raw.baseAddress! + written, raw.count - written, off_t(chunk.offset) + off_t(written))
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            written += n
        }
        return .reply(to: command, status: .noContent, body: [])
    }

    /// Reads up to `length` bytes of a blob from `offset`: fewer at its end,
    /// none past it. The reply's body is the bytes themselves.
    func readChunk(_ command: Command) throws -> Event {
        let request: FileRead
        do { request = try FileRead(body: command.body) } catch { throw StoreError(code: .badRequest, detail: "Malformed command body.") }
        let fd = Glibc.open(blobPath(request.hash), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw StoreError.notFound("This message has no attachment") }
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: request.length)
        var filled = 0
        while filled < request.length {
            let n = bytes.withUnsafeMutableBytes { raw in
                pread(fd, raw.baseAddress! + filled, raw.count - filled, off_t(request.offset) + off_t(filled))
            }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            if n == 0 { break }
            filled += n
        }
        bytes.removeLast(request.length - filled)
        Self.bytesRead.increment(by: filled)
        return .reply(to: command, status: .ok, body: bytes)
    }
}
