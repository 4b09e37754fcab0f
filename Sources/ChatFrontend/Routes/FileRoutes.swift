import ChatBus
import ChatCore
import ChatWire
import Foundation
import Hummingbird
import MultipartKit
import NIOCore
import NIOFileSystem

/// Attachments: a `multipart/form-data` message is streamed to a staging
/// file (never whole in memory), handed to the files worker, then stored as a
/// message; downloads stream the blob from disk, with ranges. With
/// `attachments: bus` the files worker's disk is on another host: the
/// staged file goes to it in chunks, and downloads come from it the same
/// way (`BusAttachments`).
struct FileRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context
    var services: FrontendServices { api.services }

    var routes: [ChatAPI.Route] {
        [.init(.get, "/api/chat/rooms/:room/messages/:message/download/", download)]
    }

    /// The fields of a multipart message, the file already on disk.
    struct Upload {
        var fields: [String: String] = [:]
        var stagingName: String?
        var fileName: String?
        var fileSize = 0
        var tooLarge = false
        var fieldBytes = 0
        /// Writing the staging file failed (disk full, I/O error).
        var writeFailed = false
        /// A second file part, which a message cannot hold.
        var extraFile = false
        /// Why the file's name is refused: known from its part's header, so
        /// the file is not read at all.
        var fileNameError: String?
    }

    func createMessageWithFile(_ request: Request, caller: Caller, room: String, contentType: String) async throws -> Response {
        guard let boundary = Self.boundary(contentType) else {
            throw APIError(.badRequest, detail: "Multipart form parse error - Invalid boundary in multipart: None")
        }
        let limit = services.config.chat.maxUploadBytes
        // Refuse at once what announces itself too large, before reading it
        // (the multipart framing adds a few hundred bytes to the file).
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit + 64 * 1024 {
            throw APIError(.contentTooLarge, detail: "File too large")
        }
        // Only a member's upload is read: anyone else is answered before a byte of it is.
        let access = try await api.call(.roomGet, shardKey: room, caller: caller, body: Requests.RoomRef(roomID: room))
        guard access.status == .ok else { return APIError.response(reply: access) }
        let staging = services.config.chat.stagingDir
        try PrivateFiles.directory(staging)
        let stagingName = UUID().uuidString.lowercased()
        let stagingPath = (staging as NSString).appendingPathComponent(stagingName)
        var keepStaging = false
        defer { if !keepStaging { unlink(stagingPath) } }

        let upload = try await receive(request, boundary: boundary, stagingPath: stagingPath, stagingName: stagingName)

        var object: [String: Any] = [:]
        for (key, value) in upload.fields { object[key] = value }
        // As DRF: a file without a message_type is a `file` message.
        if upload.stagingName != nil && object["message_type"] == nil { object["message_type"] = "file" }
        if let type = object["message_type"] as? String, upload.stagingName != nil, !["file", "image"].contains(type) {
            throw APIError.fields([("message_type", "A message with an attachment is a \"file\" or an \"image\".")])
        }
        if object["reply_to"] as? String == "" { object["reply_to"] = nil }
        var input: MessageInput
        switch MessageInput.parse(object, maxChars: services.config.maxMessageChars, hasAttachment: upload.stagingName != nil) {
        case .failure(let failure): throw APIError.fields(failure.errors)
        case .success(let parsed): input = parsed
        }
        var stored: StoredFile?
        // The files worker's marker lets a resent file.store answer the same;
        // it has served once this request is over, whatever the outcome.
        defer { unlink(stagingPath + ".stored") }
        if let name = upload.stagingName {
            var body = Requests.FileStore(roomID: room, stagingName: name, fileName: upload.fileName ?? "file", messageType: input.messageType)
            if services.config.chat.resolvedAttachments == .bus {
                // The files worker stages its own copy, under a name of its
                // own (on one host the two staging directories are one);
                // ours goes when this request ends.
                body.stagingName = UUID().uuidString.lowercased()
                body.size = Int64(upload.fileSize)
                try await BusAttachments(bus: services.bus, user: caller.json).send(path: stagingPath, size: Int64(upload.fileSize), uploadID: body.stagingName)
            } else {
                keepStaging = true  // the files worker takes it from here
            }
            let reply: Event
            do {
                reply = try await api.call(.fileStore, shardKey: room, caller: caller, body: body)
            } catch {
                keepStaging = false  // unlinking is harmless if the worker already took it
                throw error
            }
            guard reply.status == .created, let file = try? JSONDecoder().decode(StoredFile.self, from: Data(reply.body)) else {
                keepStaging = false
                return APIError.response(reply: reply)
            }
            stored = file
            FrontendMetrics.uploadBytes.increment(by: Int(clamping: file.size))
        }
        FrontendMetrics.messagesAccepted.increment()
        var message = input.request(id: IDs.uuid7(), roomID: room)
        message.file = stored
        return try await api.forward(.messageCreate, shardKey: room, caller: caller, body: message)
    }

    /// Reads a multipart body: its fields, and its file into the staging file.
    /// Refusals known from the body alone are thrown here.
    func receive(_ request: Request, boundary: String, stagingPath: String, stagingName: String) async throws -> Upload {
        let staging = StagingFile(path: stagingPath)
        let reader = MultipartUpload(
            boundary: boundary, staging: staging, stagingName: stagingName,
            maxFileBytes: services.config.chat.maxUploadBytes, maxFieldBytes: services.config.chat.maxBodyBytes
        )
        do {
            for try await chunk in request.body {
                try await reader.feed(chunk)
                if reader.refused { break }
            }
        } catch let error as APIError {
            await staging.close()
            throw error
        } catch {
            await staging.close()
            throw APIError(.badRequest, detail: "Multipart form parse error - \(error)")
        }
        await staging.close()
        let upload = reader.upload
        if let error = upload.fileNameError { throw APIError.fields([("file_attachment", error)]) }
        if upload.tooLarge { throw APIError(.contentTooLarge, detail: "File too large") }
        if upload.extraFile { throw APIError.fields([("file_attachment", "A message holds one attachment.")]) }
        if upload.writeFailed { throw APIError(.serviceUnavailable, detail: "The upload could not be written, try again.") }
        if reader.inPart { throw APIError(.badRequest, detail: "Multipart form parse error - the body ends inside a part (no closing boundary)") }
        // DRF's FileField wording; the files worker would only find no staging file.
        if upload.stagingName != nil && upload.fileSize == 0 { throw APIError.fields([("file_attachment", "The submitted file is empty.")]) }
        return upload
    }

    /// `GET .../messages/{id}/download/`: the attachment's bytes, for participants.
    func download(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let ref = try api.messageRef(context)
        let reply = try await api.call(.fileOpen, shardKey: ref.roomID, caller: caller, body: ref)
        guard reply.status == .ok, let location = try? JSONDecoder().decode(Requests.FileLocation.self, from: Data(reply.body)) else {
            return APIError.response(reply: reply)
        }
        var headers: HTTPFields = [
            .contentType: location.contentType,
            .contentDisposition: Self.contentDisposition(location.name),
            .acceptRanges: "bytes",
        ]
        var start: Int64 = 0
        var end = location.size - 1
        var status = HTTPResponse.Status.ok
        // RFC 9110 §14.2: a range of a unit other than bytes is ignored, the whole file served.
        if let range = request.headers[.range], Self.isBytesRange(range) {
            guard let (first, last) = Self.byteRange(range, size: location.size) else {
                headers[.contentRange] = "bytes */\(location.size)"
                return Response(status: .rangeNotSatisfiable, headers: headers)
            }
            (start, end) = (first, last)
            status = .partialContent
            headers[.contentRange] = "bytes \(start)-\(end)/\(location.size)"
        }
        let length = max(0, end - start + 1)
        headers[.contentLength] = String(length)
        // HEAD runs this GET handler, and the server drops the body after
        // it is made: with `attachments: bus` that would pull the whole
        // file over the bus for nothing. The headers alone (RFC 9110 9.3.2).
        if request.method == .head {
            return Response(status: status, headers: headers, body: ResponseBody(contentLength: Int(length)) { writer in try await writer.finish(nil) })
        }
        let path = location.path
        let offset = start
        if services.config.chat.resolvedAttachments == .bus {
            // The blob's name is its hash; the files worker reads it for us.
            let hash = (path as NSString).lastPathComponent
            let transfer = BusAttachments(bus: services.bus, user: caller.json)
            return Response(status: status, headers: headers, body: ResponseBody(contentLength: Int(length)) { writer in
                try await transfer.stream(hash: hash, range: offset..<(offset + length), to: &writer)
                try await writer.finish(nil)
            })
        }
        return Response(status: status, headers: headers, body: ResponseBody(contentLength: Int(length)) { writer in
            // Read on NIOFileSystem's thread pool, 64 KiB at a time, each
            // piece written before the next is read (the client sets the pace).
            try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(path), options: .init(closeOnExec: true)) { handle in
                for try await chunk in handle.readChunks(in: offset..<(offset + length), chunkLength: .kibibytes(64)) {
                    try await writer.write(chunk)
                }
            }
            try await writer.finish(nil)
        })
    }

    static func boundary(_ contentType: String) -> String? {
        guard let value = parameter("boundary", in: contentType), !value.isEmpty, value.utf8.count <= 200 else { return nil }
        return value
    }

    /// A parameter of a header value: `name="x"` or `name=x`.
    static func parameter(_ name: String, in header: String) -> String? {
        for part in header.split(separator: ";").dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == name else { continue }
            var value = pair[1].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 {
                value = String(value.dropFirst().dropLast()).replacingOccurrences(of: "\\\"", with: "\"").replacingOccurrences(of: "\\\\", with: "\\")
            }
            return value
        }
        return nil
    }

    /// `attachment` with the original name's last path segment (`/` and `\`
    /// both separate: a client may send either), quoted safely: an ASCII
    /// fallback without quotes or controls, and the name in RFC 6266 / 8187
    /// `filename*` form. Control characters are dropped from both.
    static func contentDisposition(_ original: String) -> String {
        let base = original.split(omittingEmptySubsequences: true) { $0 == "/" || $0 == "\\" }.last.map(String.init) ?? ""
        var name = String(String.UnicodeScalarView(base.unicodeScalars.filter { !$0.isControlLike }))
        if name.isEmpty || name == "." || name == ".." { name = "file" }
        let fallback = String(name.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && scalar.value >= 0x20 && scalar != "\"" && scalar != "\\" && scalar.value != 0x7F ? Character(scalar) : "_"
        })
        let encoded = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? ""
        return "attachment; filename=\"\(fallback)\"; filename*=UTF-8''\(encoded)"
    }

    /// Whether a `Range` header's unit is `bytes` (units are case-insensitive).
    static func isBytesRange(_ header: String) -> Bool {
        header.split(separator: "=", maxSplits: 1).first?.trimmingCharacters(in: .whitespaces).lowercased() == "bytes"
    }

    /// One `bytes=` range, clamped to the file, or nil when unsatisfiable.
    static func byteRange(_ header: String, size: Int64) -> (Int64, Int64)? {
        guard isBytesRange(header), let equals = header.firstIndex(of: "="), size > 0 else { return nil }
        let spec = header[header.index(after: equals)...]
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return nil }
        let first = spec[..<dash].trimmingCharacters(in: .whitespaces)
        let last = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            guard let suffix = Int64(last), suffix > 0 else { return nil }
            return (max(0, size - suffix), size - 1)
        }
        guard let start = Int64(first), start < size else { return nil }
        let end = last.isEmpty ? size - 1 : min(Int64(last) ?? -1, size - 1)
        return end >= start ? (start, end) : nil
    }
}

extension Unicode.Scalar {
    /// C0, DEL, C1, line separators and the bidirectional controls, which can
    /// disguise a name's extension (`evil\u{202E}fdp.exe`).
    fileprivate var isControlLike: Bool {
        switch properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: return true
        default: return (0x200E...0x200F).contains(value) || (0x202A...0x202E).contains(value) || (0x2066...0x2069).contains(value)
        }
    }
}
