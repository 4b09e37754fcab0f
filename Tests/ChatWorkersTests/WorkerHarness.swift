import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import Foundation
import Logging
import Testing

/// A temporary database and the commands a frontend would send, without a bus:
/// the workers are driven by calling `handle` with batches.
struct WorkerHarness {
    let database: ChatDatabase
    let config: ChatConfig
    let logger = Logger(label: "chatd.test")

    init() throws {
        let directory = NSTemporaryDirectory() + "chatd-workers-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        database = try ChatDatabase(path: directory + "/chat.sqlite")
        var config = ChatConfig()
        config.dataDir = directory
        self.config = config
    }

    static func identity(_ sub: String) -> Identity { Identity(sub: sub, email: "\(sub)@example.com", name: nil, picture: nil) }

    /// A caller as the bus carries it.
    static func userJSON(_ user: Identity) -> [UInt8] { [UInt8](try! JSONEncoder().encode(user)) }

    /// A command as the frontend builds it: the caller and the body as JSON.
    static func command(_ kind: CommandKind, _ body: some Encodable, as user: Identity?, requestID: String = UUID().uuidString) -> Command {
        let userJSON = user.map { [UInt8](try! JSONEncoder().encode($0)) } ?? []
        return Command(kind: kind, requestID: requestID, origin: "frontend.test", user: userJSON, body: [UInt8](try! JSONEncoder().encode(body)))
    }

    /// A group room of `alice` and `bob`, made through the store.
    func groupRoom() throws -> String {
        let room = IDs.uuid7()
        try database.pool.write { db in
            for sub in ["alice", "bob", "mallory"] { try Store.upsert(Self.identity(sub), in: db) }
            _ = try Store.createRoom(
                Requests.RoomCreate(id: room, name: "r", roomType: "group", participantIDs: [Self.identity("bob").id]),
                creator: Self.identity("alice").id, in: db
            )
        }
        return room
    }
}

extension [Event] {
    var replies: [Event] { filter { $0.kind == .reply } }
    var roomEvents: [Event] { filter { $0.kind == .roomEvent } }
    /// The one reply to `command`.
    func reply(to command: Command) -> Event? {
        let matching = replies.filter { $0.key == command.requestID }
        #expect(matching.count == 1, "replies to \(command.kind.rawValue): \(matching.count)")
        return matching.first
    }
    /// The keys of the room events, decoded.
    var eventKeys: [EventKey?] { roomEvents.map { EventKey($0.key) } }
}

extension Event {
    /// The refusal a reply carries, or nil (also for one that does not decode, which the caller's `==` then fails).
    var refusal: ReplyError? { try? replyError() }
}
