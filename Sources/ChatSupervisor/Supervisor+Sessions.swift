import ChatCore
import ChatWire
import Foundation

extension Supervisor {
    /// Closes the sessions frontend `name` left active (opened before now),
    /// through the broker to a receipts worker. The next process in a slot
    /// does that for its predecessor; a slot with no next process (retired
    /// by a reload, or `frontend`, the one frontend's name before there were
    /// several) has only the supervisor to do it.
    func resetSessions(ofFrontend name: String) {
        guard let broker,
            let body = try? JSONEncoder().encode(Requests.SessionReset(frontend: Requests.SessionReset.qualified(host: config.host, slot: name), startedAt: Timestamp.now().micros)) else { return }
        // Nobody waits for the reply: the worker logs what it closed.
        let command = Command(kind: .sessionReset, requestID: UUID().uuidString, origin: "supervisor", user: [], body: [UInt8](body))
        broker.send(command, toQueue: Endpoints.queue(.receipts))
    }

    /// A retired process has exited: if it was a frontend whose slot was
    /// not taken again since (the new process there resets the slot when it
    /// starts, and its own sessions must stay), its sessions are closed.
    func retiredExited(pid: Int32) {
        guard let slot = retiredFrontendSlots.removeValue(forKey: pid), children[.frontend(slot)] == nil else { return }
        resetSessions(ofFrontend: ChildName.frontend(slot).description)
    }
}
