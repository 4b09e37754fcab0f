import ChatCore
import ChatStore
import ChatWire
import Foundation
import Testing

@testable import ChatWorkers

extension StoreReadCacheTests {
    /// A timed mute ends with no write to empty the cache: a room list that
    /// shows one is not kept, so its end shows on the next read.
    @Test func aTimedMuteEndsWithoutAWrite() throws {
        let room = try harness.groupRoom()
        try write(.roomMute, Requests.RoomMute(roomID: room, until: nil), as: alice)
        #expect(Self.first(try rooms(as: alice).body)["muted"] as? Bool == true)
        #expect(worker.pages.count == 1)  // an open-ended mute changes only by a write

        let until = Timestamp.now().micros + 200_000
        try write(.roomMute, Requests.RoomMute(roomID: room, until: until), as: alice)
        #expect(Self.first(try rooms(as: alice).body)["muted"] as? Bool == true)
        #expect(worker.pages.count == 0)
        let deadline = Date().addingTimeInterval(10)
        var muted = true
        while muted && Date() < deadline {
            muted = Self.first(try rooms(as: alice).body)["muted"] as? Bool ?? true
            if muted { Thread.sleep(forTimeInterval: 0.05) }
        }
        #expect(!muted)
        #expect(Timestamp.now().micros >= until)
    }
}
