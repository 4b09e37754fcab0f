import ChatCore
import Hummingbird
import MultipartKit
import NIOCore
import NIOFileSystem

/// The staging file of an upload, written through NIOFileSystem (its own
/// thread pool), so a slow disk blocks no event loop and no task thread.
/// Created on its first bytes: a file part with none leaves no file, as before.
final class StagingFile {
    let path: String
    /// Bytes received and not yet written.
    var pending = ByteBuffer()
    /// Opening or writing failed (disk full, I/O error).
    private(set) var failed = false
    private var handle: WriteFileHandle?
    private var written: Int64 = 0

    init(path: String) {
        self.path = path
    }

    /// Writes what is pending once there are `threshold` bytes of it.
    func flush(atLeast threshold: Int = 0) async {
        guard !failed, pending.readableBytes > 0, pending.readableBytes >= threshold else { return }
        do {
            let handle = try await openedHandle()
            written += try await handle.write(contentsOf: pending, toAbsoluteOffset: written)
        } catch {
            failed = true
        }
        pending.clear()
    }

    func close() async {
        try? await handle?.close(makeChangesVisible: true)
        handle = nil
    }

    private func openedHandle() async throws -> WriteFileHandle {
        if let handle { return handle }
        // 0600 and never an existing file, as `PrivateFiles.create`; visible
        // at once (not transactional): the files worker takes it by name.
        let options = OpenOptions.Write(
            existingFile: .none, newFile: .init(permissions: .ownerReadWrite, transactionalCreation: false), closeOnExec: true
        )
        let opened = try await FileSystem.shared.openFile(forWritingAt: FilePath(path), options: options)
        handle = opened
        return opened
    }
}

/// Reads a `multipart/form-data` message body piece by piece: its fields into
/// memory (at most `maxFieldBytes`), its one file part into a `StagingFile`
/// (at most `maxFileBytes`). The parser's callbacks only record; the file is
/// written between pieces, where awaiting is possible.
final class MultipartUpload {
    /// What was read so far.
    var upload = FileRoutes.Upload()
    /// The body ended inside a part (no closing boundary).
    private(set) var inPart = false
    let staging: StagingFile
    private let stagingName: String
    private let parser: MultipartParser
    private var headerGuard: MultipartHeaderGuard
    private let maxFileBytes: Int
    private let maxFieldBytes: Int
    private var partName: String?
    private var partFileName: String?
    private var fieldData: [UInt8] = []
    /// The file part ended: write the rest and close the file.
    private var fileComplete = false
    // Bytes the parser was given and bytes it handed back as part bodies:
    // the difference is what it holds, part headers and boundaries above
    // all, which it accumulates at quadratic cost. Bounded, whatever the
    // framing (a chunked body announces no length).
    private var fed = 0
    private var delivered = 0

    /// Most bytes of a multipart body that are not part contents: the parts'
    /// headers and boundaries together (a message has a handful of parts).
    static let maxPartOverhead = 64 << 10

    init(boundary: String, staging: StagingFile, stagingName: String, maxFileBytes: Int, maxFieldBytes: Int) {
        self.parser = MultipartParser(boundary: boundary)
        self.headerGuard = MultipartHeaderGuard(boundary: boundary)
        self.staging = staging
        self.stagingName = stagingName
        self.maxFileBytes = maxFileBytes
        self.maxFieldBytes = maxFieldBytes
        parser.onHeader = { [unowned self] name, value in header(name, value) }
        parser.onBody = { [unowned self] buffer in body(&buffer) }
        parser.onPartComplete = { [unowned self] in partComplete() }
    }

    /// Whether reading should stop: the answer is already known.
    var refused: Bool {
        upload.tooLarge || upload.writeFailed || upload.extraFile || upload.fileNameError != nil
    }

    /// Parses one piece of the body (fed in pieces of 16 KiB so that what the
    /// parser holds is checked often, not once per network read) and writes
    /// what the file part gathered.
    func feed(_ chunk: ByteBuffer) async throws {
        var rest = chunk
        while let piece = rest.readSlice(length: min(rest.readableBytes, 16 << 10)) {
            fed += piece.readableBytes
            // Every byte passes the guard before the parser, which traps on some.
            guard headerGuard.accepts(piece) else {
                throw APIError(.badRequest, detail: "Multipart form parse error - a part header's name holds a byte that is not ASCII")
            }
            try parser.execute(piece)
            if fed - delivered > Self.maxPartOverhead { break }
            // The parser hands the body over in pieces that end at each CR
            // byte (every ~256 bytes of binary data): gather them and write
            // 1 MiB at a time, not one write per piece.
            await staging.flush(atLeast: 1 << 20)
            if fileComplete {
                await staging.flush()
                await staging.close()
                fileComplete = false
            }
            if staging.failed { upload.writeFailed = true }
            if rest.readableBytes == 0 { break }
        }
        if fed - delivered > Self.maxPartOverhead {
            throw APIError(.badRequest, detail: "Multipart form parse error - part headers longer than \(Self.maxPartOverhead) bytes")
        }
    }

    private func header(_ name: String, _ value: String) {
        inPart = true
        guard name.lowercased() == "content-disposition" else { return }
        partName = FileRoutes.parameter("name", in: value)
        partFileName = FileRoutes.parameter("filename", in: value)
        if partName == "file_attachment", let name = partFileName { upload.fileNameError = Validation.fileNameError(name) }
    }

    private func body(_ buffer: inout ByteBuffer) {
        delivered += buffer.readableBytes
        if partName == "file_attachment" && partFileName != nil {
            if upload.stagingName != nil { upload.extraFile = true; return }
            if upload.fileNameError != nil { return }
            upload.fileSize += buffer.readableBytes
            if upload.fileSize > maxFileBytes { upload.tooLarge = true; return }
            staging.pending.writeBuffer(&buffer)
        } else {
            upload.fieldBytes += buffer.readableBytes
            if upload.fieldBytes > maxFieldBytes { upload.tooLarge = true; return }
            fieldData += buffer.readableBytesView
        }
    }

    private func partComplete() {
        if partName == "file_attachment" && partFileName != nil && !upload.extraFile {
            upload.stagingName = stagingName
            upload.fileName = partFileName
            fileComplete = true
        } else if let name = partName {
            upload.fields[name] = String(decoding: fieldData, as: UTF8.self)
        }
        fieldData = []
        partName = nil
        partFileName = nil
        inPart = false
    }
}
