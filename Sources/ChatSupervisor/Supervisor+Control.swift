import ChatWire
import Foundation

extension Supervisor {
    /// A control-socket command (on `queue`): `status`, `restart <child|role>`, `upgrade`, `scale <role> <n>`.
    func command(_ line: String, reply: @escaping @Sendable (String) -> Void) {
        let words = line.split(separator: " ").map(String.init)
        switch (words.first, words.count) {
        case ("status", 1):
            reply(statusJSON())
        case _ where stopping:
            // Nothing is restarted or scaled any more, and a step that waited
            // for a child would outlive the supervisor.
            reply(Self.json(["error": "the supervisor is stopping; only status is answered"]))
        case ("restart", 2) where reloads.phase != .idle, ("upgrade", 1) where reloads.phase != .idle,
            ("scale", 3) where reloads.phase != .idle:
            // A reload restarts and scales children itself (or is about to):
            // one change at a time, and a scale would be undone by the file's counts.
            reply(Self.json(["error": "a reload is under way (RELOADING); try again once it is done"]))
        case ("restart", 2):
            let targets = children.keys.filter { $0.matches(words[1]) }.sorted { $0.description < $1.description }
            guard !targets.isEmpty else { return reply(Self.json(["error": "no child or role named \(words[1])"])) }
            logger.info("rolling restart", metadata: ["children": "\(targets.map(\.description).joined(separator: ","))"])
            restartStandbys(for: targets)
            rollingRestart(targets, done: [], reply: counted(reply))
        case ("upgrade", 1):
            // Every child from the binary now on disk: the workers first (each
            // role's standby restarted ahead, so no older process is promoted),
            // then the frontends, which hand their WebSockets over.
            let workers = children.keys.filter { !$0.isFrontend && !$0.isStandby }.sorted { $0.description < $1.description }
            let frontends = children.keys.filter(\.isFrontend).sorted { $0.description < $1.description }
            logger.info("upgrade", metadata: ["executable": "\(executable)"])
            restartStandbys(for: workers)
            rollingRestart(workers + frontends, done: [], reply: counted(reply))
        case ("scale", 3):
            guard let count = Int(words[2]), count >= 1, count <= 64 else { return reply(Self.json(["error": "scale takes a count from 1 to 64"])) }
            scale(role: Role(rawValue: words[1]), to: count, reply: reply)
        default:
            reply(Self.json(["error": "commands: status | restart <child|role> | upgrade | scale <role> <n>"]))
        }
    }

    /// `reply`, counting the rolling restart under way until it answers
    /// (`controlRestarts`), so that a reload's restarts wait for it.
    private func counted(_ reply: @escaping @Sendable (String) -> Void) -> @Sendable (String) -> Void {
        controlRestarts += 1
        return { [weak self] answer in
            reply(answer)
            guard let self else { return }
            queue.async {
                self.controlRestarts -= 1
                self.waiters.resume()
            }
        }
    }
}
