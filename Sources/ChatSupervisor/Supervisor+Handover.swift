import ChatWire
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A frontend process started to take a running one's WebSockets over
/// (docs/protocol.md, "Frontend handover"): not the slot's process until it
/// reports the handover done, so its reports and its exit are its own.
struct Successor {
    let process: ChildProcess
    /// The pid of the process it replaces.
    let predecessor: Int32
    /// What it reported; nil until then.
    var report: HandoverReport?
    /// It exited before it took the slot.
    var exited = false

    /// Where the handover stands for the step that waits on it.
    var settlement: HandoverSettlement { HandoverSettlement(report: report, exited: exited) }
}

/// How a handover ends for the rolling restart that waits on it. Settled by
/// the successor's report, not by its adoption as the slot's process (that
/// comes later, after the slot's restart delay): a successor that reported
/// holds the sockets, so the deadline, which only a silent one meets, never
/// kills it.
enum HandoverSettlement: Equatable {
    /// No report and still running.
    case waiting
    /// It reported the sockets adopted: it has them, whatever happens to it next.
    case tookOver
    /// Nothing moved; the old process serves on. `stop`: the successor still
    /// runs and is to be stopped (SIGUSR1: its own new clients get 1012).
    case failed(reason: String, stop: Bool)

    init(report: HandoverReport?, exited: Bool) {
        switch (report, report?.refused) {
        case (.some, nil): self = .tookOver
        case (.some, .some(let refused)): self = .failed(reason: "refused: \(refused)", stop: !exited)
        case (nil, _): self = exited ? .failed(reason: "the new process exited", stop: false) : .waiting
        }
    }
}

/// One handover as `ctl status` lists it.
struct HandoverRecord {
    let slot: Int
    let at: Date
    let report: HandoverReport
}

extension Supervisor {
    /// How long a handover may take, from the spawn to the report: the
    /// successor's start, its subscriptions and the drain of every socket.
    var handoverDeadline: Double { 10 + config.hangTimeoutSeconds }

    /// From a handed-over frontend's SIGTERM to its SIGKILL: the grace (its
    /// HTTP shutdown), then its bus drain (`handoverDrainSeconds`: the
    /// commands of moved sockets it still resends), by the longer of the
    /// deadline it read and the one running now (a reload's frontend
    /// restarts run after it applied a new one). One second more for its
    /// exit once the drain ends (closing the bus, the last log lines): a
    /// kill at the drain's very end would cut what it answers last.
    var retiredAfterHandoverKillDelay: Double {
        graceSeconds + max(config.handoverDrainSeconds, reloads.childrenRead.handoverDrainSeconds) + 1
    }

    /// A rolling restart's step for frontend `slot`: a successor is started
    /// beside the running process, with its handover socket; once it reports
    /// the WebSockets adopted it becomes the slot's process and the old one
    /// is stopped. Refused (an incompatible state version), dead or silent:
    /// the successor is stopped, the old process serves on, and `failed`
    /// says why. Not ready, or its successor did not start: `fallback`, a
    /// restart with 1012.
    func handOver(slot: Int, then next: @escaping () -> Void, failed: @escaping (String) -> Void, fallback: @escaping () -> Void) {
        let name = ChildName.frontend(slot)
        guard let old = children[name]?.process, children[name]?.machine.isReady == true, successors[slot] == nil else { return fallback() }
        var (environment, inherit) = childEnvironment(for: name, predecessorFailed: false)
        environment[HandoverReport.predecessorVariable] = HandoverReport.socketPath(runtimeDir: config.resolvedRuntimeDir, pid: old.pid)
        let process: ChildProcess
        do {
            process = try spawner.spawn(
                executable: executable, arguments: (children[name]?.spec.arguments ?? []) + baseArguments, environment: environment,
                inherit: inherit, standardInput: nil
            )
        } catch {
            logger.error("handover: the successor did not start", metadata: ["child": "\(name)", "error": "\(error)"])
            return fallback()
        }
        logger.info("handover: successor started", metadata: ["child": "\(name)", "pid": "\(process.pid)", "predecessor": "\(old.pid)"])
        process.onExit = { [weak self] process in self?.successorExited(process, slot: slot) }
        successors[slot] = Successor(process: process, predecessor: old.pid)
        // Settled by the report (or the successor's end), never by the
        // adoption: only a successor silent until the deadline is killed.
        waiters.wait(on: queue, until: Uptime.now() + handoverDeadline) { [unowned self] in
            successors[slot].map { $0.settlement != .waiting } ?? true
        } then: { [unowned self] in
            guard case .failed(let reason, let stop) = successors[slot]?.settlement else { return next() }
            // Refused, or it died: the old process serves on. The successor's
            // own new clients (it served meanwhile) get 1012 and reconnect.
            let successor = successors.removeValue(forKey: slot)
            if stop, let successor { kill(successor.process.pid, SIGUSR1) }
            logger.warning("handover failed; the frontend serves on", metadata: ["child": "\(name)", "reason": "\(reason)"])
            failed(reason)
        } failure: { [unowned self] in
            // The deadline (or the supervisor's stop) with no report: it holds no socket.
            if let successor = successors[slot], successor.settlement == .waiting {
                successors[slot] = nil
                kill(successor.process.pid, SIGKILL)
            }
            failed("no report in time")
        }
    }

    /// A successor's sd_notify datagram: only its handover report counts
    /// until it has the slot. Returns false when `pid` is no successor.
    func successorReported(_ fields: [String: String], from pid: Int32?) -> Bool {
        guard let pid, let slot = successors.first(where: { $0.value.process.pid == pid })?.key else { return false }
        guard let text = fields[HandoverReport.field] else { return true }
        let report: HandoverReport
        switch HandoverReport.read(text) {
        case .success(let read): report = read
        case .failure(.version(let version)):
            // Another binary's report (`ctl upgrade`): what it says is not
            // known, so it counts as a failed handover, stopped, not guessed at.
            logger.error("handover: the successor's report is in another version", metadata: ["child": "\(ChildName.frontend(slot))", "report": "\(text)"])
            report = HandoverReport(refused: "its report is in version \(version); this supervisor reads \(HandoverReport.version)")
        case .failure(.malformed):
            logger.warning("handover: a malformed report ignored", metadata: ["child": "\(ChildName.frontend(slot))", "report": "\(text)"])
            return true
        }
        handovers.append(HandoverRecord(slot: slot, at: Date(), report: report))
        if handovers.count > 20 { handovers.removeFirst() }
        countHandover(report)
        logger.info("handover reported", metadata: ["child": "\(ChildName.frontend(slot))", "report": "\(report)"])
        // The takeover first, the report after: the takeover's events resume
        // the waiters, and the restart's wait must not settle on a slot whose
        // process is gone and whose machine is not yet told why (it would
        // take that for the replacement and go on at once).
        if report.refused == nil { takeOver(slot: slot) }
        successors[slot]?.report = report
        waiters.resume()
        return true
    }

    /// The successor has the sockets: the old process is retired (stopped,
    /// its sessions left alone: they live on), and the slot's machine, told
    /// its process left as planned, adopts the successor at its next spawn.
    private func takeOver(slot: Int) {
        let name = ChildName.frontend(slot)
        guard var record = children[name], let old = record.process, old.pid == successors[slot]?.predecessor, let pid = record.machine.pid else {
            return
        }
        retiring[pid] = record.machine
        record.process = nil
        children[name] = record
        // A restart's signal (SIGUSR1), not a stop's: sockets it still holds
        // (a successor that reported and then lost its handover socket leaves
        // the never-stopped ones with it) close with 1012, so their clients
        // reconnect at once, not with 1001 as if the service were going away.
        deliver(.stop(restart: false, killAt: Uptime.now() + retiredAfterHandoverKillDelay, signal: name.restartSignal), to: .retired(pid: pid))
        deliver(.successorTookOver(child: name.description), to: .child(name))
    }

    /// Instead of spawning frontend `name`: the successor that reported its
    /// handover becomes the slot's process. False when there is none.
    func adoptSuccessor(_ name: ChildName) -> Bool {
        guard case .frontend(let slot) = name, let successor = successors[slot], successor.report?.refused == nil,
            successor.report != nil, !successor.exited
        else { return false }
        successors[slot] = nil
        let process = successor.process
        process.onExit = { [weak self] process in self?.reaped(process) }
        children[name]?.process = process
        children[name]?.storeShards = nil
        children[name]?.webSockets = nil
        deliver(.spawned(pid: process.pid), to: .child(name))
        // It said READY=1 long ago, as a successor: it serves.
        deliver(.reportedReady, to: .child(name))
        return true
    }

    /// The supervisor is stopping: a successor that reported holds the
    /// sockets (its wait settled, so nothing kills it); it becomes its
    /// slot's process now, not after the restart delay (no spawn comes
    /// once stopping), so the stop reaches it and is waited for like every
    /// frontend's. One that did not report was killed by its wait's failure.
    func adoptReportedSuccessors() {
        for slot in successors.keys.sorted() where successors[slot]?.settlement == .tookOver {
            _ = adoptSuccessor(.frontend(slot))
        }
    }

    private func successorExited(_ process: ChildProcess, slot: Int) {
        guard successors[slot]?.process === process else { return reaped(process) }
        successors[slot]?.exited = true
        logger.warning("handover: the successor exited", metadata: ["child": "\(ChildName.frontend(slot))", "pid": "\(process.pid)"])
        // Adopted already but not yet the slot's: the slot restarts as after any exit.
        if successors[slot]?.report?.refused == nil && successors[slot]?.report != nil {
            successors[slot] = nil
        }
        waiters.resume()
    }

    /// The last handovers, newest last, for `ctl status`.
    var handoverRows: [[String: Any]] {
        handovers.map { record in
            var row: [String: Any] = [
                "child": ChildName.frontend(record.slot).description, "at": ISO8601DateFormatter().string(from: record.at),
            ]
            if let refused = record.report.refused {
                row["refused"] = refused
            } else {
                row["connections_moved"] = record.report.adopted
                row["events_replayed"] = record.report.replayed
                row["gaps"] = record.report.gaps
                row["milliseconds"] = record.report.millis
                // Each socket neither read nor written: from its stop in the old process to its resumption.
                row["pause_median_ms"] = Double(record.report.pauseMedianMicros) / 1_000
                row["pause_max_ms"] = Double(record.report.pauseMaxMicros) / 1_000
            }
            return row
        }
    }
}
