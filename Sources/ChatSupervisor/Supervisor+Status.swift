import ChatWire
import Foundation

extension Supervisor {
    /// Tells systemd how things are: READY=1 once (every child ready), STATUS= on change.
    /// Standbys are spares: counted apart, and not waited for.
    func updateStatus() {
        let serving = children.filter { !$0.key.isStandby }
        let ready = serving.values.filter(\.machine.isReady).count
        let looping = children.filter { $0.value.machine.isCrashLooping }.map(\.key.description).sorted()
        let restarts = serving.values.reduce(0) { $0 + $1.machine.restarts }
        let planned = serving.values.reduce(0) { $0 + $1.machine.plannedRestarts }
        // `restarts`: crashes, hangs, kills from outside; planned ones apart.
        var status = "\(ready)/\(serving.count) children ready, \(restarts) restarts, \(planned) planned restarts"
        let standbys = children.filter(\.key.isStandby)
        if !standbys.isEmpty { status += ", \(standbys.values.filter(\.machine.isReady).count)/\(standbys.count) standbys ready" }
        if !looping.isEmpty { status += "; crash-looping: \(looping.joined(separator: ", "))" }
        if stopping { status = "stopping" }
        if !toldReady && ready == serving.count && !stopping {
            toldReady = true
            systemd.send(["READY": "1", "STATUS": status])
            lastStatus = status
            logger.info("ready", metadata: ["children": "\(serving.count)"])
            reloadAfterStart()
        } else if status != lastStatus {
            systemd.send(["STATUS": status])
            lastStatus = status
        }
    }

    func watchdogPing() {
        // Pinging proves the supervisor's queue runs; children have their own liveness.
        systemd.send(["WATCHDOG": "1"])
    }

    /// `ctl status`: every child, the queue depths, the systemd status, and
    /// the address the frontend's socket is bound to (the real port when
    /// `listen` asked for port 0). Standbys are listed apart (`standbys`,
    /// the same fields but the queue's): they serve nothing yet.
    func statusJSON() -> String {
        var status = statusObject()
        // Several hosts: each with its children, and when it was last heard from.
        if let hosts = hostRows(status) { status["hosts"] = hosts }
        return Self.json(status)
    }

    /// `ctl status` of this host alone.
    func statusObject() -> [String: Any] {
        let now = Uptime.now()
        // Queue depth: what the frontends sent to a queue and have no answer
        // for yet (waiting in the broker or a worker's socket, being handled,
        // or its reply on the way). ZeroMQ does not count its queues.
        var queues: [String: Int] = [:]
        for record in children.values where record.process != nil {
            queues.merge(record.outstanding.outstanding, uniquingKeysWith: +)
        }
        let records = children.values.sorted { $0.spec.name.description < $1.spec.name.description }
        let rows = records.filter { !$0.spec.name.isStandby }.map { record -> [String: Any] in
            let child = record.machine
            // store.1 drains queue store-1; the other roles' workers share one.
            let depth = record.spec.name.worker.map { queues[$0.queue] ?? 0 } ?? record.outstanding.total
            var row: [String: Any] = [
                "queue_depth": depth,
                "child": record.spec.name.description,
                "role": record.spec.name.role,
                "pid": record.process.map { Int($0.pid) } ?? NSNull(),
                "ready": child.isReady,
                "uptime_seconds": record.process == nil ? NSNull() : (now.seconds(since: child.lastStart) * 10).rounded() / 10,
                "restarts": child.restarts,
                "planned_restarts": child.plannedRestarts,
                "last_heartbeat_seconds_ago": child.isReady ? (now.seconds(since: child.lastHeartbeat) * 10).rounded() / 10 : NSNull(),
            ]
            // The store shard count a frontend sends by; null while it changes
            // (`ctl scale store`). Its open WebSockets, null before its first heartbeat.
            if record.spec.name.isFrontend {
                row["store_shards"] = record.storeShards ?? NSNull()
                let sockets: Int? = record.process == nil ? nil : record.webSockets
                row["websockets"] = sockets ?? NSNull()
            }
            return row
        }
        let standbys = records.filter(\.spec.name.isStandby).map { record -> [String: Any] in
            [
                "child": record.spec.name.description, "role": record.spec.name.role,
                "pid": record.process.map { Int($0.pid) } ?? NSNull(), "ready": record.machine.isReady,
                "uptime_seconds": record.process == nil ? NSNull() : (now.seconds(since: record.machine.lastStart) * 10).rounded() / 10,
                "restarts": record.machine.restarts, "planned_restarts": record.machine.plannedRestarts,
            ]
        }
        var status: [String: Any] = ["children": rows, "queues": queues, "status": lastStatus, "standbys": standbys]
        // Each frontend handover: sockets moved, time taken, events replayed (Supervisor+Handover.swift).
        status["handovers"] = handoverRows
        if let address = (listeningSocket ?? slotSockets.values.first)?.address { status["listen"] = address }
        return status
    }

    static func json(_ object: [String: Any]) -> String {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
