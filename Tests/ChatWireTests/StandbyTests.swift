import ChatWire
import Testing

@Suite struct StandbyTests {
    @Test func namesRoundTrip() {
        for role in Role.allCases {
            #expect(StandbyName(StandbyName(role).description) == StandbyName(role))
        }
        #expect(StandbyName(.store).description == "standby.store")
        for text in ["standby.", "standby.frontend", "standby.store.0", "store.0", "standby", "Standby.store", ""] {
            #expect(StandbyName(text) == nil, "\(text)")
        }
        // A standby's name is no worker's: frontends and the supervisor cannot mistake one.
        #expect(WorkerName("standby.store") == nil)
    }

    @Test func echoIsOnATopicNoFrontendTakes() throws {
        let echo = StandbyName(.search).echo(pid: 4242)
        #expect(echo.topic == "standby.search.4242")
        #expect(!echo.topic.hasPrefix(Topic.heartbeatPrefix) && !echo.topic.hasPrefix(Topic.roomPrefix) && !echo.topic.hasPrefix(Topic.replyPrefix))
        #expect(Heartbeat(echo) == nil)
        #expect(try Event(frames: echo.encode()) == echo)
        #expect(StandbyName(.search).echo(pid: 4243).encode() != echo.encode(), "each process waits for its own copy")
    }

    @Test func assignmentsRoundTrip() {
        for assignment in [
            StandbyAssignment(worker: WorkerName(.store, 3), predecessorFailed: false),
            StandbyAssignment(worker: WorkerName(.receipts, 0), predecessorFailed: true),
            StandbyAssignment(worker: WorkerName(.store, 1_023), predecessorFailed: true),
        ] {
            #expect(assignment.line.hasSuffix("\n") && assignment.line.utf8.count <= StandbyAssignment.maxLineBytes)
            #expect(StandbyAssignment(line: assignment.line) == assignment)
            #expect(StandbyAssignment(line: String(assignment.line.dropLast())) == assignment, "the newline is optional")
        }
        #expect(StandbyAssignment(worker: WorkerName(.receipts, 0), predecessorFailed: true).line == "receipts.0 failed\n")
        #expect(StandbyAssignment(line: "files.0") == StandbyAssignment(worker: WorkerName(.files, 0), predecessorFailed: false))
    }

    @Test func refusesWhatIsNotAnAssignment() {
        for line in ["", "\n", "store", "store.x", "standby.store", "frontend", "store.0 crashed", "store.0 failed extra", "store.0  failed",
                     " store.0", "store.0 ", "store.0\nstore.1", "store.0 FAILED"] {
            #expect(StandbyAssignment(line: line) == nil, "\(line.debugDescription)")
        }
    }
}
