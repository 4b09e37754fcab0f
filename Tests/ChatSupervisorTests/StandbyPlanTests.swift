import ChatWire
import Foundation
import Logging
import Testing

@testable import ChatSupervisor

/// Which children stand by and which standby a spawn promotes, and a
/// standby's state machine when it is promoted: no process started.
@Suite struct StandbyPlanTests {
    let t0 = Uptime(seconds: 1_000_000)

    @Test func everyWorkerRoleStandsByUnlessTurnedOffOrNoWorkersRunHere() {
        #expect(StandbyPlan(enabled: true, runsWorkers: true).roles == [.store, .receipts, .search, .files])
        #expect(StandbyPlan(enabled: false, runsWorkers: true).roles.isEmpty)
        #expect(StandbyPlan(enabled: true, runsWorkers: false).roles.isEmpty, "a frontend-only host has no workers to replace")
        #expect(StandbyPlan(enabled: true, runsWorkers: true, runsFiles: false).roles == [.store, .receipts, .search], "filesWorkers: 0")
    }

    @Test func aWorkersSpawnPromotesItsRolesReadyStandbyOnly() {
        let plan = StandbyPlan(enabled: true, runsWorkers: true)
        let ready: Set<ChildName> = [.standby(.store), .standby(.search)]
        let promotable = { (name: ChildName) in ready.contains(name) }
        #expect(plan.standby(replacing: .worker(WorkerName(.store, 3)), stopping: false, isPromotable: promotable) == .standby(.store))
        #expect(plan.standby(replacing: .worker(WorkerName(.search, 0)), stopping: false, isPromotable: promotable) == .standby(.search))
        #expect(plan.standby(replacing: .worker(WorkerName(.receipts, 0)), stopping: false, isPromotable: promotable) == nil, "not ready: a cold start")
        #expect(plan.standby(replacing: .frontend(0), stopping: false, isPromotable: { _ in true }) == nil)
        #expect(plan.standby(replacing: .standby(.store), stopping: false, isPromotable: { _ in true }) == nil, "a standby's own restart is cold")
        #expect(plan.standby(replacing: .worker(WorkerName(.store, 0)), stopping: true, isPromotable: promotable) == nil)
        let off = StandbyPlan(enabled: false, runsWorkers: true)
        #expect(off.standby(replacing: .worker(WorkerName(.store, 0)), stopping: false, isPromotable: { _ in true }) == nil)
    }

    @Test func standbyNamesParseAndMatchOnlyThemselves() {
        #expect(ChildName("standby.receipts") == .standby(.receipts))
        #expect(ChildName.standby(.receipts).description == "standby.receipts")
        #expect(ChildName.standby(.files).role == "files" && ChildName.standby(.files).worker == nil)
        #expect(ChildName.standby(.store).isStandby && !ChildName.worker(WorkerName(.store, 0)).isStandby)
        // `ctl restart store` lists the store workers; their standby restarts alongside, unlisted.
        #expect(!ChildName.standby(.store).matches("store") && ChildName.standby(.store).matches("standby.store"))
    }

    @Test func aPromotedStandbyStartsItsSuccessorWithoutCountingARestart() {
        var child = Child()
        _ = child.handle(.start, now: t0)
        _ = child.handle(.spawned(pid: 100), now: t0)
        #expect(child.handle(.handedOver, now: t0 + 0.5).isEmpty, "only a ready standby is promoted")
        _ = child.handle(.reportedReady, now: t0 + 0.5)
        let promoted = child.handle(.handedOver, now: t0 + 30)
        // The successor waits a quarter second, clear of the promoted worker's first batches.
        #expect(promoted == [.log(.info, "standby promoted", ["pid": "100"]), .wake(at: t0 + 30.25)])
        #expect(child.state == .backoff(until: t0 + 30.25) && child.pid == nil && child.restarts == 0)
        #expect(child.handle(.timer, now: t0 + 30.2).isEmpty)
        #expect(child.handle(.timer, now: t0 + 30.25).last == .spawn(predecessorFailed: false))
        _ = child.handle(.spawned(pid: 101), now: t0 + 30.25)
        #expect(child.state == .starting(pid: 101))
    }

    @Test func aStandbyPromotedAtOnceWaitsOutTheSecond() {
        var child = Child()
        _ = child.handle(.start, now: t0)
        _ = child.handle(.spawned(pid: 100), now: t0)
        _ = child.handle(.reportedReady, now: t0 + 0.2)
        // At most one start a second, standbys included (a worker crash-looping
        // on a poison command is slowed by its own backoff; its standbys by this).
        #expect(child.handle(.handedOver, now: t0 + 0.4).last == .wake(at: t0 + 1))
        #expect(child.handle(.timer, now: t0 + 0.9).isEmpty)
        #expect(child.handle(.timer, now: t0 + 1).last == .spawn(predecessorFailed: false))
    }
}
