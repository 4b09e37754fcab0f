import ChatWire
import Foundation
import Testing

@Suite struct EventKeyTests {
    static let id = "0190f3a2-7c1e-7abc-8def-0123456789ab"

    @Test func roundTripsEveryCase() {
        let keys: [EventKey] = [
            .none, .message(id: Self.id, change: .created), .message(id: Self.id, change: .edited(at: 1_732_000_000_123_456)),
            .message(id: Self.id, change: .deleted), .session(id: Self.id, change: .joined), .session(id: Self.id, change: .left),
            .except(ConnectionRef(frontend: "frontend.0-1234", number: 17)), .except(ConnectionRef(frontend: "a/b", number: 0)),
            .removeUser(Self.id), .removeEveryone, .onlyUser(Self.id),
        ]
        for key in keys {
            #expect(EventKey(key.description) == key, "\(key)")
        }
    }

    /// The frames as docs/protocol.md spells them.
    @Test func spellsTheDocumentedFrames() {
        #expect(EventKey.message(id: "m1", change: .created).description == "m:m1:new")
        #expect(EventKey.message(id: "m1", change: .edited(at: 5)).description == "m:m1:edit5")
        #expect(EventKey.message(id: "m1", change: .deleted).description == "m:m1:delete")
        #expect(EventKey.session(id: "s1", change: .left).description == "s:s1:left")
        #expect(EventKey.except(ConnectionRef(frontend: "f", number: 3)).description == "x:f/3")
        #expect(EventKey.removeUser("u1").description == "k:u1")
        #expect(EventKey.removeEveryone.description == "k:*")
        #expect(EventKey.onlyUser("u1").description == "u:u1")
        #expect(EventKey.none.description == "")
    }

    @Test func onlyMessageAndSessionKeysAreIdempotent() {
        #expect(EventKey.message(id: "m", change: .created).isIdempotent)
        #expect(EventKey.session(id: "s", change: .joined).isIdempotent)
        for key: EventKey in [.none, .except(ConnectionRef(frontend: "f", number: 1)), .removeUser("u"), .removeEveryone, .onlyUser("u")] {
            #expect(!key.isIdempotent, "\(key)")
        }
    }

    @Test func refusesWhatNoWorkerWrites() {
        for text in [
            "m:", "m:id", "m::new", "m:id:", "m:id:created", "m:id:edit", "m:id:edit-", "m:id:edit01", "m:a:b:new",
            "s:id:gone", "s:id", "x:", "x:frontend", "x:/3", "x:f/", "x:f/-1", "x:f/03", "k:", "u:", "q:id", "m", "hello",
        ] {
            #expect(EventKey(text) == nil, "\(text)")
        }
    }

    /// Event keys are spelled in ChatWire only: a string literal that starts
    /// like one anywhere else in Sources is a key built or parsed by hand.
    @Test func noOtherModuleSpellsAnEventKey() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources").standardized
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") && !$0.hasPrefix("ChatWire/") }
        #expect(files.count > 20, "Sources not found at \(sources.path)")
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for prefix in ["m:", "s:", "x:", "k:"] {
                #expect(!text.contains("\"" + prefix), "\(file) spells an event key `\(prefix)`")
            }
        }
    }

    @Test func connectionRefsSplitAtTheLastSlash() {
        #expect(ConnectionRef("frontend.0/12") == ConnectionRef(frontend: "frontend.0", number: 12))
        #expect(ConnectionRef("host/frontend/3")?.frontend == "host/frontend")
        #expect(ConnectionRef("frontend.0/x") == nil)
        #expect(ConnectionRef("/4") == nil)
    }
}

@Suite struct ReplyErrorTests {
    @Test func roundTripsThroughAReply() throws {
        let command = Command(kind: .roomCreate, requestID: "r1", origin: "frontend.0", user: [], body: [])
        let errors: [ReplyError] = [
            .detail(.notFound, "Room not found"),
            ReplyError(.badRequest, [.error("Cannot leave direct message rooms")]),
            .fields([("name", "Ensure this field has no more than 255 characters."), ("participant_ids", "User \"x\" does not exist.\nNo.")]),
            .detail(.unavailable, "Storage is unavailable, try again."),
            .poisonCommand,
        ]
        for error in errors {
            let reply = Event.reply(to: command, error: error)
            #expect(reply.status == error.status)
            let decoded = try Event(frames: reply.encode())
            #expect(try decoded.replyError() == error)
        }
    }

    /// Built from whatever a worker's checks found, it must not trap: a
    /// worker killed by a bad reply would make the command look like poison.
    @Test func isTotal() {
        let empty = ReplyError(.badRequest, [])
        #expect(empty.status == .badRequest && empty.problems == [.detail("Invalid request.")])
        let success = ReplyError(.ok, [.detail("x")])
        #expect(success.status == .internal && success.problems == [.detail("x")])
    }

    @Test func successesCarryNoError() throws {
        let command = Command(kind: .roomGet, requestID: "r1", origin: "frontend.0", user: [], body: [])
        for status in [Status.ok, .created, .noContent] {
            // A success's body is the client's JSON; it is never read as an error.
            #expect(try Event.reply(to: command, status: status, body: Array(#"{"detail":"x"}"#.utf8)).replyError() == nil)
            #expect(!status.isError)
        }
    }

    @Test func refusesMalformedBodies() {
        let bodies = [
            "", "{}", "[]", #"{"detail":"Not found."}"#, #"[{"kind":"detail"}]"#, #"[{"kind":"field","message":"no field"}]"#,
            #"[{"kind":"field","field":"","message":"m"}]"#, #"[{"kind":"detail","field":"f","message":"m"}]"#,
            #"[{"kind":"teapot","message":"m"}]"#, "[{",
        ]
        for body in bodies {
            #expect(throws: WireError.self, "\(body)") { try ReplyError(status: .badRequest, body: Array(body.utf8)) }
        }
        let good = ReplyError.detail(.forbidden, "no").encode()
        #expect(throws: WireError.self) { try ReplyError(status: .ok, body: good) }
    }
}
