import Foundation
import Testing

@testable import ChatSupervisor

/// `chatd ctl status` without `--json`: the same answer as tables a person reads.
@Suite struct StatusTableTests {
    static let answer = """
        {"children":[{"child":"frontend.0","pid":101,"ready":true,"uptime_seconds":3725.4,"restarts":0,"planned_restarts":2,"queue_depth":3,\
        "websockets":17,"store_shards":1,"last_heartbeat_seconds_ago":0.2,"role":"frontend"},\
        {"child":"store.0","pid":null,"ready":false,"uptime_seconds":null,"restarts":4,"planned_restarts":0,"queue_depth":0,"role":"store",\
        "last_heartbeat_seconds_ago":null}],
        "queues":{"store-0":3,"receipts":0},"status":"1/2 children ready, 4 restarts, 2 planned restarts","listen":"127.0.0.1:8000",
        "standbys":[{"child":"standby.store","pid":120,"ready":true,"uptime_seconds":42,"restarts":0,"planned_restarts":1,"role":"store"}],
        "handovers":[{"child":"frontend.0","at":"2026-11-30T21:00:00Z","connections_moved":17,"events_replayed":2,"gaps":0,"milliseconds":812,\
        "pause_median_ms":2.4,"pause_max_ms":43},{"child":"frontend.0","at":"2026-11-30T21:05:00Z","refused":"state version 3"}]}
        """

    @Test func everySectionIsATableWithItsColumnsAligned() throws {
        let text = try #require(StatusTable.render(Self.answer))
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines[0] == "status: 1/2 children ready, 4 restarts, 2 planned restarts")
        #expect(lines[1] == "listen: 127.0.0.1:8000")
        let header = try #require(lines.firstIndex { $0.hasPrefix("CHILD") })
        #expect(lines[header] == "CHILD       PID  READY  UPTIME  RESTARTS  PLANNED  QUEUE  WEBSOCKETS")
        #expect(lines[header + 1] == "frontend.0  101  yes    1h02m   0         2        3      17")
        #expect(lines[header + 2] == "store.0     -    no     -       4         0        0      -")
        #expect(text.contains("QUEUE     IN FLIGHT\nreceipts  0\nstore-0   3\n"))
        #expect(text.contains("standby.store  120  yes    42s     0         1\n"))
        #expect(text.contains("frontend.0  2026-11-30T21:00:00Z  ok"))
        #expect(text.contains("refused: state version 3"))
    }

    @Test func anAnswerThatIsNotAStatusIsLeftAsItIs() {
        #expect(StatusTable.render(#"{"error":"the supervisor is stopping"}"#) == nil)
        #expect(StatusTable.render("not json") == nil)
    }

    @Test func uptimesReadAtAGlance() {
        #expect(StatusTable.uptime(59.9) == "59s")
        #expect(StatusTable.uptime(303) == "5m03s")
        #expect(StatusTable.uptime(7620) == "2h07m")
        #expect(StatusTable.uptime(3 * 86_400 + 4 * 3600 + 5) == "3d04h")
        #expect(StatusTable.uptime(NSNull()) == "-")
    }
}
