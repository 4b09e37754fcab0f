import ChatWire
import Foundation
import Testing

@testable import ChatSupervisor

/// A frontend handover's wait (Supervisor+Handover.swift): settled by the
/// successor's report, so a successor that holds the sockets is never killed
/// as silent, however long its adoption as the slot's process takes.
@Suite struct HandoverSettlementTests {
    let adopted = HandoverReport(adopted: 12, replayed: 3, millis: 40)

    @Test func everyPathSettlesAsItShould() {
        // Deadline with no report: still waiting, so the deadline's kill applies.
        #expect(HandoverSettlement(report: nil, exited: false) == .waiting)
        // Report, then exit: it took the sockets; its exit is the slot's own restart.
        #expect(HandoverSettlement(report: adopted, exited: false) == .tookOver)
        #expect(HandoverSettlement(report: adopted, exited: true) == .tookOver)
        // Exit before any report: nothing moved, nothing left to stop.
        #expect(HandoverSettlement(report: nil, exited: true) == .failed(reason: "the new process exited", stop: false))
        // Refused: the old serves on; the successor still runs until stopped.
        let refused = HandoverReport(refused: "state version 2; this frontend reads 1")
        #expect(HandoverSettlement(report: refused, exited: false) == .failed(reason: "refused: state version 2; this frontend reads 1", stop: true))
        #expect(HandoverSettlement(report: refused, exited: true) == .failed(reason: "refused: state version 2; this frontend reads 1", stop: false))
    }

    /// The race the review found: the report comes just before the deadline,
    /// the adoption (after the slot's restart delay) just after it. The wait
    /// is over at the report: its deadline does not fire.
    @Test func aReportJustBeforeTheDeadlineIsNotKilledAtIt() async throws {
        let queue = DispatchQueue(label: "t")
        let waiters = Waiters()
        let outcome = Outcome()
        var report: HandoverReport?
        queue.sync {
            waiters.wait(on: queue, until: Uptime.now() + 0.3) {
                HandoverSettlement(report: report, exited: false) != .waiting
            } then: {
                outcome.set("settled")
            } failure: {
                outcome.set("killed")
            }
            report = adopted
            waiters.resume()
        }
        // Well past the deadline; the slot has still not adopted it.
        try await Task.sleep(for: .milliseconds(800))
        #expect(queue.sync { outcome.value } == "settled")
    }

    /// The supervisor's log names a frontend takeover for what it is, not a standby promotion.
    @Test func aTakeoverIsLoggedAsTheSuccessorsAndRestartsNothing() {
        let t0 = Uptime(seconds: 1_000_000)
        var child = Child()
        _ = child.handle(.start, now: t0)
        _ = child.handle(.spawned(pid: 100), now: t0)
        _ = child.handle(.reportedReady, now: t0 + 0.5)
        let actions = child.handle(.successorTookOver(child: "frontend.1"), now: t0 + 30)
        #expect(actions.first == .log(.info, "handover: successor took frontend.1 over", ["pid": "100"]))
        #expect(child.restarts == 0 && child.pid == nil)
    }
}

private final class Outcome: @unchecked Sendable {
    var value = ""
    func set(_ text: String) { if value.isEmpty { value = text } }
}
