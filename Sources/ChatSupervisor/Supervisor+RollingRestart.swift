import Foundation

extension Supervisor {
    /// One child at a time: SIGTERM (a frontend: its WebSockets are handed
    /// to its new process, or with `frontendHandover: false` or when that
    /// fails, SIGUSR1, so its clients get 1012 and reconnect to a sibling),
    /// wait for the replacement's READY=1, then the next. The stop is a planned one (`Child.Event.stop(restart: true)`):
    /// it neither counts as a restart nor slows the next start.
    func rollingRestart(_ names: [ChildName], done: [ChildName], reply: @escaping @Sendable (String) -> Void) {
        guard let name = names.first else { return reply(Self.json(["restarted": done.map(\.description)])) }
        let rest = Array(names.dropFirst())
        // Between two lives already (crashed, backing off): nothing to restart.
        guard let old = children[name]?.process?.pid else { return rollingRestart(rest, done: done, reply: reply) }
        let deadline = Uptime.now() + config.hangTimeoutSeconds + graceSeconds
        let next = { [unowned self] in rollingRestart(rest, done: done + [name], reply: reply) }
        // A frontend hands its WebSockets to its new process (Supervisor+Handover.swift).
        if case .frontend(let slot) = name, config.frontendHandover {
            return handOver(slot: slot, then: { [unowned self] in
                awaitReplacement(name, of: old, until: deadline + handoverDeadline, then: next, reply: reply, done: done)
            }, failed: { reason in
                // The old process serves on; what follows is not restarted either.
                reply(Self.json(["error": "\(name): handover failed, still serving: \(reason)", "restarted": done.map(\.description)]))
            }, fallback: { [unowned self] in
                restart(name, of: old, until: Uptime.now() + config.hangTimeoutSeconds + graceSeconds, then: next, reply: reply, done: done)
            })
        }
        restart(name, of: old, until: deadline, then: next, reply: reply, done: done)
    }

    /// Stops `name` (process `old`) for a restart and waits for its replacement.
    private func restart(
        _ name: ChildName, of old: Int32, until deadline: Uptime, then next: @escaping () -> Void, reply: @escaping @Sendable (String) -> Void,
        done: [ChildName]
    ) {
        guard children[name]?.process?.pid == old else { return awaitReplacement(name, of: old, until: deadline, then: next, reply: reply, done: done) }
        deliver(.stop(restart: true, killAt: Uptime.now() + graceSeconds, signal: name.restartSignal), to: .child(name))
        // New connections go to the siblings meanwhile, not to its backlog.
        if case .frontend(let slot) = name { releaseSocket(ofSlot: slot) }
        awaitReplacement(name, of: old, until: deadline, then: next, reply: reply, done: done)
    }

    private func awaitReplacement(
        _ name: ChildName, of old: Int32, until deadline: Uptime, then next: @escaping () -> Void, reply: @escaping @Sendable (String) -> Void,
        done: [ChildName]
    ) {
        waiters.wait(on: queue, until: deadline) { [unowned self] in
            // READY=1 from the replacement, not from the process it replaces.
            // Gone from `children`: retired by a scale-down meanwhile, nothing to wait for.
            children[name].map { $0.machine.isReady && $0.process?.pid != old } ?? true
        } then: {
            next()
        } failure: {
            reply(Self.json(["error": "\(name) did not come back", "restarted": done.map(\.description)]))
        }
    }
}
