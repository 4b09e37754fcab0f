import ChatBus
import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import Crypto
import Foundation
import Logging
import Metrics

/// The `files` role: validates staged uploads, stores them content-addressed
/// (`files/<first two hex digits>/<sha-256>`), and decides who may download
/// an attachment. With `attachments: local` (one host) the bytes never cross
/// the bus: the frontend streams them to and from disk; this worker only
/// reads, hashes and renames. With `attachments: bus` they come and go in
/// chunks (`FilesWorker+Bus.swift`).
///
/// A client's file name is data, never a path: it is kept in the database
/// and sent back as given; on disk there are only hashes.
public final class FilesWorker {
    /// Bytes of uploads this process stored (a blob already there counts again: it was uploaded).
    static let bytesStored = Counter(label: "chatd_file_bytes_stored_total")
    /// Bytes of blobs this process read for `file.read` (downloads over the bus).
    static let bytesRead = Counter(label: "chatd_file_bytes_read_total")

    let database: any StoreEngine
    let config: ChatConfig
    let logger: Logger
    let decoder = JSONDecoder()

    public init(database: any StoreEngine, config: ChatConfig, logger: Logger) {
        _ = Self.bytesStored  // its series shows from the start, at 0
        _ = Self.bytesRead
        self.database = database
        self.config = config
        self.logger = logger
        try? PrivateFiles.directory(config.filesDir)
        try? PrivateFiles.directory(config.stagingDir)
    }

    public func handle(_ batch: [Command]) -> [Event] {
        batch.map { command in
            do {
                guard let identity = try? decoder.decode(Identity.self, from: Data(command.user)) else {
                    throw StoreError(code: .badRequest, detail: "Missing or malformed user identity.")
                }
                switch command.kind {
                case .fileStore:
                    let request = try decode(Requests.FileStore.self, command)
                    try database.read { db in
                        let room = try db.requireRoom(request.roomID, user: identity.id)
                        guard room.isActive else { throw StoreError.badRequest(error: "This room is no longer active") }
                    }
                    let stored = try store(request)
                    return .reply(to: command, status: .created, body: [UInt8](try JSONEncoder().encode(stored)))
                case .fileOpen:
                    let ref = try decode(Requests.MessageRef.self, command)
                    let location = try open(ref, user: identity.id)
                    return .reply(to: command, status: .ok, body: [UInt8](try JSONEncoder().encode(location)))
                case .fileChunk:
                    return try writeChunk(command)
                case .fileRead:
                    return try readChunk(command)
                default:
                    throw StoreError(code: .badRequest, detail: "Not a files command: \(command.kind.rawValue)")
                }
            } catch let error as StoreError {
                return .reply(to: command, error: ReplyError(error))
            } catch {
                logger.error("files command failed", metadata: ["error": "\(error)", "kind": "\(command.kind.rawValue)"])
                return .reply(to: command, error: .detail(.unavailable, "File storage is unavailable, try again."))
            }
        }
    }

    private var lastSweep = Date.distantPast

    /// When idle, at most once a minute: `ChatConfig.sweepStaging` (uploads
    /// abandoned an hour ago, and `.stored` markers no resend can need: a
    /// frontend on this disk removes its own; over the bus only this does).
    public func idle() -> [Event] {
        guard Date().timeIntervalSince(lastSweep) > 60 else { return [] }
        lastSweep = Date()
        for name in config.sweepStaging() { logger.info("removed an abandoned upload", metadata: ["staging": "\(name)"]) }
        return []
    }

    func decode<T: Decodable>(_ type: T.Type, _ command: Command) throws -> T {
        do { return try decoder.decode(type, from: Data(command.body)) } catch {
            throw StoreError(code: .badRequest, detail: "Malformed command body.")
        }
    }

    /// Validates a staged upload and moves it to its content address.
    /// A resent command finds the staging file gone and the blob in place:
    /// the answer is the same.
    func store(_ request: Requests.FileStore) throws -> StoredFile {
        // The staging name is the frontend's (a UUID); refuse anything else.
        guard IDs.canonical(request.stagingName) != nil else { throw StoreError(code: .badRequest, detail: "Bad staging name.") }
        let staging = (config.stagingDir as NSString).appendingPathComponent(request.stagingName)
        // Whatever happens, the staged bytes do not stay: stored (renamed) or refused.
        defer { unlink(staging) }
        if let error = Validation.fileNameError(request.fileName) { throw StoreError.badRequest([("file_attachment", error)]) }
        let marker = staging + ".stored"
        if let done = try? Data(contentsOf: URL(fileURLWithPath: marker)), let stored = try? decoder.decode(StoredFile.self, from: done) {
            return stored
        }
        guard let handle = FileHandle(forReadingAtPath: staging) else {
            throw StoreError.badRequest([("file_attachment", "The upload was not received.")])
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: Int64 = 0
        var head = Data()
        while true {
            // The throwing read: the old one traps on an I/O error.
            guard let chunk = try handle.read(upToCount: 1 << 16), !chunk.isEmpty else { break }
            if head.count < 16 { head.append(chunk.prefix(16 - head.count)) }
            hasher.update(data: chunk)
            size += Int64(chunk.count)
            if size > Int64(config.maxUploadBytes) {
                    throw StoreError(code: .badRequest, detail: "File too large")
            }
        }
        // Over the bus the staged file was assembled from chunks: it must be
        // whole (a chunk lost to a swept or replaced staging directory).
        if let expected = request.size, expected != size {
            throw IncompleteUpload(expected: expected, staged: size)
        }
        if request.messageType == "image" && Self.imageType(Array(head)) == nil {
            throw StoreError.badRequest([("file_attachment", "Upload a valid image. The file you uploaded was either not an image or a corrupted image.")])
        }
        let hash = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let blob = blobPath(hash)
        try PrivateFiles.directory((blob as NSString).deletingLastPathComponent)
        if FileManager.default.fileExists(atPath: blob) {
            PrivateFiles.narrow(blob)  // stored by an older version, 0644
        } else {
            // Same filesystem, so rename is atomic: a blob is whole or absent.
            guard rename(staging, blob) == 0 else { throw StoreError(code: .badRequest, detail: "Could not store the upload.") }
        }
        let stored = StoredFile(hash: hash, name: request.fileName, size: size)
        Self.bytesStored.increment(by: Int(clamping: size))
        if let data = try? JSONEncoder().encode(stored) { try? PrivateFiles.write(data, to: marker) }
        return stored
    }

    /// Whether `user` may download the attachment of a message, and where it is.
    func open(_ ref: Requests.MessageRef, user: String) throws -> Requests.FileLocation {
        let message = try database.read { db -> Message in
            // Attachments are for participants only (also of public rooms).
            try db.requireRoom(ref.roomID, user: user)
            guard let message = try db.messages(ids: [ref.messageID]).first, message.roomID == ref.roomID else {
                throw StoreError.notFound()
            }
            return message
        }
        guard let hash = message.fileAttachment, !message.isDeleted else { throw StoreError.notFound("This message has no attachment") }
        let path = blobPath(hash)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path), let size = attributes[.size] as? Int64 else {
            throw StoreError.notFound("This message has no attachment")
        }
        let head = FileHandle(forReadingAtPath: path).map { handle -> [UInt8] in
            defer { try? handle.close() }
            return [UInt8]((try? handle.read(upToCount: 16)) ?? Data())
        } ?? []
        let name = message.fileName ?? hash
        return Requests.FileLocation(path: path, name: name, size: size, contentType: Self.imageType(head) ?? Self.contentType(forName: name))
    }

    /// Where the blob of `hash` (64 lowercase hex digits) lives:
    /// `files/<first two digits>/<hash>`.
    func blobPath(_ hash: String) -> String {
        ((config.filesDir as NSString).appendingPathComponent(String(hash.prefix(2))) as NSString).appendingPathComponent(hash)
    }

    /// The image type the first bytes announce, if any.
    static func imageType(_ head: [UInt8]) -> String? {
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if head.starts(with: Array("GIF87a".utf8)) || head.starts(with: Array("GIF89a".utf8)) { return "image/gif" }
        if head.count >= 12, head.starts(with: Array("RIFF".utf8)), Array(head[8..<12]) == Array("WEBP".utf8) { return "image/webp" }
        return nil
    }

    static func contentType(forName name: String) -> String {
        switch (name as NSString).pathExtension.lowercased() {
        case "txt", "md", "log", "csv": "text/plain; charset=utf-8"
        case "pdf": "application/pdf"
        case "json": "application/json"
        case "zip": "application/zip"
        default: "application/octet-stream"
        }
    }
}

/// A staged upload shorter or longer than its frontend sent: answered
/// `unavailable` (the client may send it again), and logged.
struct IncompleteUpload: Error {
    var expected: Int64
    var staged: Int64
}
