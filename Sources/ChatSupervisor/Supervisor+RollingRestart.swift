import Foundation

extension Supervisor {
    /// One child at a time: SIGTERM (a frontend: SIGUSR1, so its clients get
    /// 1012 and reconnect to a sibling), wait for the replacement's READY=1,
    /// then the next. The stop is a planned one (`Child.Event.stop(restart: true)`):
    /// it neither counts as a restart nor slows the next start.
    func rollingRestart(_ names: [ChildName], done: [ChildName], reply: @escaping @Sendable (String) -> Void) {
        guard let name = names.first else { return reply(Self.json(["restarted": done.map(\.description)])) }
        let rest = Array(names.dropFirst())
        // Between two lives already (crashed, backing off): nothing to restart.
        guard let old = children[name]?.process?.pid else { return rollingRestart(rest, done: done, reply: reply) }
        let deadline = Uptime.now() + config.hangTimeoutSeconds + graceSeconds
        deliver(.stop(restart: true, killAt: Uptime.now() + graceSeconds, signal: name.restartSignal), to: .child(name))
        // New connections go to the siblings meanwhile, not to its backlog.
        if case .frontend(let slot) = name { releaseSocket(ofSlot: slot) }
        waiters.wait(on: queue, until: deadline) { [unowned self] in
            // READY=1 from the replacement, not from the process it replaces.
            children[name].map { $0.machine.isReady && $0.process?.pid != old } ?? false
        } then: { [unowned self] in
            rollingRestart(rest, done: done + [name], reply: reply)
        } failure: {
            reply(Self.json(["error": "\(name) did not come back", "restarted": done.map(\.description)]))
        }
    }
}
