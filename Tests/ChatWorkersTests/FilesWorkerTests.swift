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
}
