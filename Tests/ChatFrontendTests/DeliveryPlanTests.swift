@testable import ChatBus
import ChatCore
import ChatWire
import Foundation
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import ChatFrontend

/// A batch of room events as sockets receive it: framed once, joined per
/// room, in the bus's order (`DeliveryPlan`).
@Suite struct DeliveryPlanTests {
    /// The bytes NIO's own encoder writes for a text frame, header and payload.
    static func encodedByNIO(_ payload: [UInt8]) throws -> [UInt8] {
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        try channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: payload))).wait()
        var bytes: [UInt8] = []
        while let part = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = part else { Issue.record("file region"); break }
            bytes += buffer.readableBytesView
        }
        _ = try channel.finish()
        return bytes
    }

    static func framed(_ bodies: [[UInt8]]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for body in bodies { DeliveryPlan.writeTextFrame(body, into: &buffer) }
        return buffer
    }

    @Test(arguments: [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
    func aFrameIsWhatNIOsEncoderWrites(length: Int) throws {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var buffer = ByteBuffer()
        DeliveryPlan.writeTextFrame(payload, into: &buffer)
        #expect(Array(buffer.readableBytesView) == (try Self.encodedByNIO(payload)))
    }

    static func event(_ room: String, _ key: String, _ body: String) -> RoomEvent {
        RoomEvent(roomID: room, key: key, body: Array(body.utf8))
    }

    @Test func eachRoomGetsItsEventsInOrderInOneBuffer() {
        var recent = RecentKeys()
        let plan = DeliveryPlan([
            Self.event("a", "", "a1"), Self.event("b", "", "b1"), Self.event("a", "m:1:new", "a2"), Self.event("a", "s:9:joined", "a3"),
        ], recent: &recent)
        #expect(plan.rooms.map(\.roomID) == ["a", "b"])
        #expect(plan.rooms[0].steps == [.frames(Self.framed([Array("a1".utf8), Array("a2".utf8), Array("a3".utf8)]), excluded: nil)])
        #expect(plan.rooms[1].steps == [.frames(Self.framed([Array("b1".utf8)]), excluded: nil)])
    }

    @Test func anExceptionOrARemovalSplitsTheRoomsFrames() throws {
        var recent = RecentKeys()
        let typing = try #require(EventKey("x:front-1/7"))
        guard case .except(let typist) = typing else { Issue.record("not an exception"); return }
        let plan = DeliveryPlan([
            Self.event("a", "", "1"), Self.event("a", "x:front-1/7", "typing"), Self.event("a", "", "2"), Self.event("a", "", "3"),
            Self.event("a", "k:user-5", ""), Self.event("a", "", "4"), Self.event("a", "k:*", ""),
        ], recent: &recent)
        #expect(plan.rooms.count == 1)
        #expect(plan.rooms[0].steps == [
            .frames(Self.framed([Array("1".utf8)]), excluded: nil),
            .frames(Self.framed([Array("typing".utf8)]), excluded: typist),
            .frames(Self.framed([Array("2".utf8), Array("3".utf8)]), excluded: nil),
            .remove(user: "user-5"),
            .frames(Self.framed([Array("4".utf8)]), excluded: nil),
            .remove(user: nil),
        ])
    }

    /// A blocked sender's new message: its own step, skipped by the blockers'
    /// sockets; its key is still the message's (a resend is dropped).
    @Test func aHiddenMessageGetsAStepOfItsOwn() {
        var recent = RecentKeys()
        let plan = DeliveryPlan([
            Self.event("a", "", "1"), Self.event("a", "m:7:new|u1,u2", "hidden"), Self.event("a", "m:7:new|u1,u2", "hidden"),
            Self.event("a", "", "2"),
        ], recent: &recent)
        #expect(plan.rooms[0].steps == [
            .frames(Self.framed([Array("1".utf8)]), excluded: nil),
            .hidden(Self.framed([Array("hidden".utf8)]), from: ["u1", "u2"]),
            .frames(Self.framed([Array("2".utf8)]), excluded: nil),
        ])
    }

    /// A call signal: a step of its own for its addressee's sockets; and
    /// it is no idempotency key, so two equal signals both go.
    @Test func aSignalIsAStepForItsAddresseeAlone() {
        var recent = RecentKeys()
        let plan = DeliveryPlan([
            Self.event("a", "", "1"), Self.event("a", "u:u7", "offer"), Self.event("a", "u:u7", "offer"), Self.event("a", "", "2"),
        ], recent: &recent)
        #expect(plan.rooms[0].steps == [
            .frames(Self.framed([Array("1".utf8)]), excluded: nil),
            .onlyTo(Self.framed([Array("offer".utf8)]), user: "u7"),
            .onlyTo(Self.framed([Array("offer".utf8)]), user: "u7"),
            .frames(Self.framed([Array("2".utf8)]), excluded: nil),
        ])
    }

    @Test func aRepublishedEventIsDeliveredOnceAndAnUnknownKeyNever() {
        var recent = RecentKeys()
        let first = DeliveryPlan([Self.event("a", "m:1:new", "x"), Self.event("a", "m:1:new", "x"), Self.event("a", "?:junk", "y")], recent: &recent)
        #expect(first.rooms.map(\.steps) == [[.frames(Self.framed([Array("x".utf8)]), excluded: nil)]])
        // In a later batch too; a key without idempotency repeats.
        let second = DeliveryPlan([Self.event("a", "m:1:new", "x"), Self.event("a", "", "z"), Self.event("a", "", "z")], recent: &recent)
        #expect(second.rooms.map(\.steps) == [[.frames(Self.framed([Array("z".utf8), Array("z".utf8)]), excluded: nil)]])
    }

    @Test func theOldestKeysAreForgottenPastTheCapacity() {
        var recent = RecentKeys(capacity: 2)
        let keys = (1...3).map { EventKey.message(id: "\($0)", change: .created) }
        let firsts = keys.map { recent.firstDelivery(of: $0) }
        #expect(firsts == [true, true, true])
        let forgotten = recent.firstDelivery(of: keys[0])  // pushed out by the third, so new again
        let kept = recent.firstDelivery(of: keys[2])
        #expect(forgotten)
        #expect(!kept)
    }
}

/// The REST commands' bodies, written by `JSONWriter`: the worker's
/// `JSONDecoder` reads what `JSONEncoder` would have written.
@Suite struct CommandBodyTests {
    static func sameAfterDecoding<T: Codable & WrittenCommandBody>(_ value: T) throws -> Bool {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let decoded = try JSONDecoder().decode(T.self, from: Data(value.commandBytes))
        return try encoder.encode(decoded) == encoder.encode(value)
    }

    @Test func everyWrittenBodyDecodesToItsRequest() throws {
        let page = Requests.Page(page: 3, pageSize: 100, url: "http://h/api/chat/rooms/\"x\"/é", query: [["page_size", "100"], ["a b", "c\\d\n"]])
        let room = IDs.uuid7()
        #expect(try Self.sameAfterDecoding(Requests.MessageList(roomID: room, page: page, before: IDs.uuid7(), after: nil)))
        #expect(try Self.sameAfterDecoding(Requests.MessageList(roomID: room, page: page, before: nil, after: IDs.uuid7())))
        #expect(try Self.sameAfterDecoding(Requests.MessageList(roomID: room, page: Requests.Page(page: 1, pageSize: 50, url: "", query: []), before: nil, after: nil)))
        #expect(try Self.sameAfterDecoding(Requests.RoomList(page: page, roomType: "public", discover: true)))
        #expect(try Self.sameAfterDecoding(Requests.RoomList(page: page, roomType: nil, discover: false)))
        #expect(try Self.sameAfterDecoding(Requests.RoomRef(roomID: room)))
        #expect(try Self.sameAfterDecoding(Requests.MessageRef(roomID: room, messageID: IDs.uuid7())))
    }
}
