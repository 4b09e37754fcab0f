import ChatCore
import ChatStore
import ChatWire
import Crypto
import Foundation
import Testing

@testable import ChatWorkers

@Suite struct FilesWorkerTests {
    let harness: WorkerHarness
    let worker: FilesWorker
    let alice = WorkerHarness.identity("alice"), mallory = WorkerHarness.identity("mallory")

    init() throws {
        harness = try WorkerHarness()
        worker = FilesWorker(database: harness.database, config: harness.config, logger: harness.logger)
    }

    /// Bytes staged as the frontend stages an upload, under a fresh UUID.
    func stage(_ bytes: String) throws -> String {
        let name = UUID().uuidString.lowercased()
        try Data(bytes.utf8).write(to: URL(fileURLWithPath: harness.config.stagingDir + "/" + name))
        return name
    }

    func store(_ room: String, _ stagingName: String, as user: Identity? = nil) -> Command {
        WorkerHarness.command(.fileStore, Requests.FileStore(roomID: room, stagingName: stagingName, fileName: "notes.txt", messageType: "file"),
                              as: user ?? alice)
    }

    @Test func anUploadIsStoredUnderItsHashAndAResendGetsTheSameAnswer() throws {
        let room = try harness.groupRoom()
        let staged = try stage("hello, file")
        let command = store(room, staged)
        let reply = try #require(worker.handle([command]).first)
        #expect(reply.status == .created)
        let stored = try JSONDecoder().decode(StoredFile.self, from: Data(reply.body))
        let hash = SHA256.hash(data: Data("hello, file".utf8)).map { String(format: "%02x", $0) }.joined()
        #expect(stored == StoredFile(hash: hash, name: "notes.txt", size: 11))
        #expect(FileManager.default.fileExists(atPath: "\(harness.config.filesDir)/\(hash.prefix(2))/\(hash)"))
        #expect(!FileManager.default.fileExists(atPath: "\(harness.config.stagingDir)/\(staged)"))
        // The reply was lost: the staging file is gone, the answer is the same.
        let again = try #require(worker.handle([command]).first)
        #expect(again.status == .created)
        #expect(try JSONDecoder().decode(StoredFile.self, from: Data(again.body)) == stored)
    }

    @Test func refusalsAreTypedErrors() throws {
        let room = try harness.groupRoom()
        let badName = store(room, "../../etc/passwd")
        let notReceived = store(room, UUID().uuidString.lowercased())
        let stranger = store(room, try stage("x"), as: mallory)
        var anonymous = store(room, try stage("x"))
        anonymous.user = []
        let noAttachment = WorkerHarness.command(.fileOpen, Requests.MessageRef(roomID: room, messageID: IDs.uuid7()), as: alice)
        let replies = worker.handle([badName, notReceived, stranger, anonymous, noAttachment])
        #expect(replies.reply(to: badName)?.refusal == .detail(.badRequest, "Bad staging name."))
        #expect(replies.reply(to: notReceived)?.refusal == .fields([("file_attachment", "The upload was not received.")]))
        #expect(replies.reply(to: stranger)?.refusal == .detail(.forbidden, "You don't have access to this room"))
        #expect(replies.reply(to: anonymous)?.refusal == .detail(.badRequest, "Missing or malformed user identity."))
        #expect(replies.reply(to: noAttachment)?.refusal == .detail(.notFound, "Not found."))
    }

    /// `file.chunk` commands of one upload, as a frontend of another host sends them.
    func chunks(_ bytes: [UInt8], uploadID: String, size: Int = FileTransfer.chunkBytes) -> [Command] {
        stride(from: 0, to: bytes.count, by: size).map { offset in
            let piece = FileChunk(uploadID: uploadID, offset: Int64(offset), bytes: Array(bytes[offset..<min(bytes.count, offset + size)]))
            return Command(kind: .fileChunk, requestID: UUID().uuidString, origin: "frontend.test", user: WorkerHarness.userJSON(alice), body: piece.encode())
        }
    }

    func read(_ hash: String, offset: Int64, length: Int) -> Command {
        Command(kind: .fileRead, requestID: UUID().uuidString, origin: "frontend.test", user: WorkerHarness.userJSON(alice),
                body: FileRead(hash: hash, offset: offset, length: length).encode())
    }

    @Test func chunksInAnyOrderAndResentMakeTheUploadThatIsStoredAndReadBack() throws {
        let room = try harness.groupRoom()
        let bytes = (0..<(FileTransfer.chunkBytes * 2 + 1000)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let uploadID = UUID().uuidString.lowercased()
        let commands = chunks(bytes, uploadID: uploadID)
        #expect(commands.count == 3)
        // Out of order, and the middle one twice (a resend after a worker's death).
        for reply in worker.handle([commands[2], commands[0], commands[1], commands[1]]) { #expect(reply.status == .noContent) }
        let storeCommand = WorkerHarness.command(
            .fileStore, Requests.FileStore(roomID: room, stagingName: uploadID, fileName: "big.bin", messageType: "file", size: Int64(bytes.count)), as: alice)
        let reply = try #require(worker.handle([storeCommand]).first)
        #expect(reply.status == .created, "\(String(decoding: reply.body, as: UTF8.self))")
        let stored = try JSONDecoder().decode(StoredFile.self, from: Data(reply.body))
        #expect(stored.hash == SHA256.hash(data: Data(bytes)).map { String(format: "%02x", $0) }.joined())
        // A late resend of a chunk of a stored upload leaves no staging file behind.
        #expect(worker.handle([commands[0]]).first?.status == .noContent)
        #expect(!FileManager.default.fileExists(atPath: "\(harness.config.stagingDir)/\(uploadID)"))

        // Read back in chunks, the last one short; past the end, nothing.
        var back: [UInt8] = []
        for offset in stride(from: 0, to: bytes.count, by: FileTransfer.chunkBytes) {
            let answer = try #require(worker.handle([read(stored.hash, offset: Int64(offset), length: FileTransfer.chunkBytes)]).first)
            #expect(answer.status == .ok)
            back += answer.body
        }
        #expect(back == bytes)
        #expect(worker.handle([read(stored.hash, offset: Int64(bytes.count), length: 10)]).first?.body == [])
        let middle = try #require(worker.handle([read(stored.hash, offset: 5, length: 7)]).first)
        #expect(middle.body == Array(bytes[5..<12]))
    }

    @Test func chunksBeyondTheLimitMalformedOnesAndMissingBlobsAreRefused() throws {
        let room = try harness.groupRoom()
        let uploadID = UUID().uuidString.lowercased()
        func chunk(_ id: String, offset: Int64, count: Int) -> Command {
            Command(kind: .fileChunk, requestID: UUID().uuidString, origin: "frontend.test", user: WorkerHarness.userJSON(alice),
                    body: FileChunk(uploadID: id, offset: offset, bytes: Array(repeating: 7, count: count)).encode())
        }
        let beyond = chunk(uploadID, offset: Int64(harness.config.maxUploadBytes) - 10, count: 11)
        let tooBig = chunk(uploadID, offset: 0, count: FileTransfer.chunkBytes + 1)
        let notAUUID = chunk("passwd", offset: 0, count: 1)
        var garbled = chunk(uploadID, offset: 0, count: 1)
        garbled.body = Array("no header".utf8)
        let missing = read(String(repeating: "0", count: 64), offset: 0, length: 10)
        let replies = worker.handle([beyond, tooBig, notAUUID, garbled, missing])
        #expect(replies.reply(to: beyond)?.refusal == .detail(.badRequest, "File too large"))
        #expect(replies.reply(to: tooBig)?.refusal == .detail(.badRequest, "Chunk too large."))
        #expect(replies.reply(to: notAUUID)?.refusal == .detail(.badRequest, "Bad staging name."))
        #expect(replies.reply(to: garbled)?.refusal == .detail(.badRequest, "Malformed command body."))
        #expect(replies.reply(to: missing)?.refusal == .detail(.notFound, "This message has no attachment"))
        #expect(!FileManager.default.fileExists(atPath: "\(harness.config.stagingDir)/\(uploadID)"), "a refused chunk writes nothing")

        // A chunk lost on the way (the staging directory swept, another
        // worker host): the store finds the file short and says try again.
        _ = worker.handle([chunk(uploadID, offset: 0, count: 100)])
        let short = WorkerHarness.command(
            .fileStore, Requests.FileStore(roomID: room, stagingName: uploadID, fileName: "a.bin", messageType: "file", size: 200), as: alice)
        #expect(worker.handle([short]).first?.refusal == .detail(.unavailable, "File storage is unavailable, try again."))
        #expect(!FileManager.default.fileExists(atPath: "\(harness.config.stagingDir)/\(uploadID)"))
    }

    /// Offsets at `Int64.max` (a bus peer's mistake or malice) are refused
    /// with 400, and the largest accepted offset is compared without
    /// overflow: no trap, so no crash, no resend to the replacement and no
    /// poison failing other transfers.
    @Test func hugeOffsetsAreRefusedWithoutTrapping() throws {
        let uploadID = UUID().uuidString.lowercased()
        let hash = String(repeating: "0", count: 64)
        func command(_ kind: CommandKind, _ body: String) -> Command {
            Command(kind: kind, requestID: UUID().uuidString, origin: "frontend.test", user: WorkerHarness.userJSON(alice), body: Array(body.utf8))
        }
        let chunkMax = command(.fileChunk, "\(uploadID) \(Int64.max)\nxyz")
        let readMax = command(.fileRead, "\(hash) \(Int64.max) 10")
        let chunkAtCap = command(.fileChunk, "\(uploadID) \(FileTransfer.maxOffset)\nxyz")
        let readAtCap = command(.fileRead, "\(hash) \(FileTransfer.maxOffset) 10")
        let replies = worker.handle([chunkMax, readMax, chunkAtCap, readAtCap])
        #expect(replies.reply(to: chunkMax)?.refusal == .detail(.badRequest, "Malformed command body."))
        #expect(replies.reply(to: readMax)?.refusal == .detail(.badRequest, "Malformed command body."))
        #expect(replies.reply(to: chunkAtCap)?.refusal == .detail(.badRequest, "File too large"))
        #expect(replies.reply(to: readAtCap)?.refusal == .detail(.notFound, "This message has no attachment"))
        #expect(!FileManager.default.fileExists(atPath: "\(harness.config.stagingDir)/\(uploadID)"))
    }
}
