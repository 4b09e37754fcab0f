import ChatCore
import ChatStore
import Foundation
import GRDB
import Testing

/// `DatabaseBackup`'s refusals and failures, on files in a temporary
/// directory (the copy taken while serving is in EndToEnd.Backup).
@Suite struct BackupTests {
    /// A directory with a chat database holding one user.
    static func dataDirectory() throws -> (directory: String, database: String) {
        let directory = try ChatDatabaseTests.temporaryDirectory()
        let path = directory + "/chat.sqlite"
        let database = try ChatDatabase(path: path)
        try database.writer.write { try Store.upsert(Identity(sub: "alice", email: "a@example.com", name: nil, picture: nil), in: $0) }
        try database.writer.close()
        return (directory, path)
    }

    static func failure(_ body: () throws -> DatabaseBackup.Result) -> String? {
        do {
            _ = try body()
            return nil
        } catch let failure as DatabaseBackup.Failure {
            return failure.description
        } catch {
            return "not a DatabaseBackup.Failure: \(error)"
        }
    }

    static func users(_ path: String) throws -> [String] {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        return try database.read { try String.fetchAll($0, sql: "SELECT sub FROM users") }
    }

    @Test func anExistingFileOrSymlinkAtTheTemporaryNameIsNeitherFollowedNorRemoved() throws {
        let (data, source) = try Self.dataDirectory()
        let shared = try ChatDatabaseTests.temporaryDirectory()
        defer { for directory in [data, shared] { try? FileManager.default.removeItem(atPath: directory) } }
        let victim = shared + "/victim"
        try Data("someone else's".utf8).write(to: URL(fileURLWithPath: victim))
        let target = shared + "/copy.sqlite"
        try FileManager.default.createSymbolicLink(atPath: target + ".partial-planted", withDestinationPath: victim)
        try Data("mine".utf8).write(to: URL(fileURLWithPath: target + ".partial-left"))

        let viaLink = Self.failure { try DatabaseBackup.run(source: source, destination: target, force: false, temporarySuffix: "planted") }
        #expect(viaLink?.hasPrefix("creating \(target).partial-planted: ") == true, "\(viaLink ?? "no failure")")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "someone else's", "the write did not go through the link")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: target + ".partial-planted") == victim, "the link is not ours to remove")

        let overFile = Self.failure { try DatabaseBackup.run(source: source, destination: target, force: false, temporarySuffix: "left") }
        #expect(overFile?.hasPrefix("creating \(target).partial-left: ") == true, "\(overFile ?? "no failure")")
        #expect(try String(contentsOfFile: target + ".partial-left", encoding: .utf8) == "mine")
        #expect(!FileManager.default.fileExists(atPath: target))

        // With its own name, the copy is made and nothing else is touched.
        let copy = try DatabaseBackup.run(source: source, destination: target, force: false)
        let users = try Self.users(target)
        #expect(copy.path == target && users == ["alice"])
        let names = try FileManager.default.contentsOfDirectory(atPath: shared).sorted()
        #expect(names == ["copy.sqlite", "copy.sqlite.partial-left", "copy.sqlite.partial-planted", "victim"])
    }

    @Test func theDatabaseUnderAnotherNameIsRefusedEvenWithForce() throws {
        let (data, source) = try Self.dataDirectory()
        let elsewhere = try ChatDatabaseTests.temporaryDirectory()
        defer { for directory in [data, elsewhere] { try? FileManager.default.removeItem(atPath: directory) } }
        let alias = elsewhere + "/alias"
        try FileManager.default.createSymbolicLink(atPath: alias, withDestinationPath: data)
        let before = try Data(contentsOf: URL(fileURLWithPath: source))

        for destination in [alias, alias + "/", alias + "/chat.sqlite", data + "/./chat.sqlite"] {
            let refusal = Self.failure { try DatabaseBackup.run(source: source, destination: destination, force: true) }
            #expect(refusal?.hasSuffix("chat.sqlite is the database itself") == true, "\(destination): \(refusal ?? "no failure")")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: source)) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: data) == ["chat.sqlite"], "no temporary file left")
    }

    @Test func aFailedCopyLeavesNoTemporaryFileAndNamesThePaths() throws {
        let directory = try ChatDatabaseTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = directory + "/not-a-database"
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: source))
        let backups = directory + "/backups"
        try FileManager.default.createDirectory(atPath: backups, withIntermediateDirectories: false)

        let failure = Self.failure { try DatabaseBackup.run(source: source, destination: backups, force: false) }
        #expect(failure?.hasPrefix("copying \(source) to \(backups)/chat.sqlite.partial-") == true, "\(failure ?? "no failure")")
        #expect(try FileManager.default.contentsOfDirectory(atPath: backups).isEmpty, "the temporary file is removed")
    }

    @Test func aDestinationMustBeInADirectoryThatExists() throws {
        let (data, source) = try Self.dataDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let slash = Self.failure { try DatabaseBackup.run(source: source, destination: data + "/backups/", force: false) }
        #expect(slash == "\(data)/backups/ is not a directory: create it first, or name a file")
        let missing = Self.failure { try DatabaseBackup.run(source: source, destination: data + "/backups/chat.sqlite", force: false) }
        #expect(missing == "no directory \(data)/backups to write \(data)/backups/chat.sqlite in: create it first")
        #expect(try FileManager.default.contentsOfDirectory(atPath: data) == ["chat.sqlite"])
    }
}
