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
        case ("restart", 2):
            let targets = children.keys.filter { $0.matches(words[1]) }.sorted { $0.description < $1.description }
            guard !targets.isEmpty else { return reply(Self.json(["error": "no child or role named \(words[1])"])) }
            logger.info("rolling restart", metadata: ["children": "\(targets.map(\.description).joined(separator: ","))"])
            restartStandbys(for: targets)
            rollingRestart(targets, done: [], reply: reply)
        case ("upgrade", 1):
            // Every child from the binary now on disk: the workers first (each
            // role's standby restarted ahead, so no older process is promoted),
            // then the frontends, which hand their WebSockets over.
            let workers = children.keys.filter { !$0.isFrontend && !$0.isStandby }.sorted { $0.description < $1.description }
            let frontends = children.keys.filter(\.isFrontend).sorted { $0.description < $1.description }
            logger.info("upgrade", metadata: ["executable": "\(executable)"])
            restartStandbys(for: workers)
            rollingRestart(workers + frontends, done: [], reply: reply)
        case ("scale", 3):
            guard let count = Int(words[2]), count >= 1, count <= 64 else { return reply(Self.json(["error": "scale takes a count from 1 to 64"])) }
            scale(role: Role(rawValue: words[1]), to: count, reply: reply)
        default:
            reply(Self.json(["error": "commands: status | restart <child|role> | upgrade | scale <role> <n>"]))
        }
    }
}
