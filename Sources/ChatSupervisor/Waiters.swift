import Foundation

/// Steps of a rolling restart or a store rescale that wait for children:
/// one to say READY=1, every frontend to report a shard count. Each is
/// resumed by the event that makes its condition hold (the supervisor calls
/// `resume` after every child event), or failed at its deadline or when the
/// supervisor stops; never polled. Used only on the supervisor's queue.
final class Waiters: @unchecked Sendable {
    private struct Waiter {
        var condition: () -> Bool
        var then: () -> Void
        var failure: () -> Void
    }

    private var waiting: [Int: Waiter] = [:]
    private var nextID = 0
    /// `failAll` ran: the supervisor is stopping, nothing will be waited for.
    private var closed = false

    /// Runs `then` once `condition` holds: now, or after the event that makes
    /// it hold. Runs `failure` instead if `deadline` passes first, or at once
    /// once the supervisor is stopping (`failAll`).
    func wait(
        on queue: DispatchQueue, until deadline: Uptime, _ condition: @escaping () -> Bool,
        then: @escaping () -> Void, failure: @escaping () -> Void
    ) {
        // A step begun after the stop must not wait past the supervisor's end.
        if closed { return failure() }
        if condition() { return then() }
        let id = nextID
        nextID += 1
        waiting[id] = Waiter(condition: condition, then: then, failure: failure)
        queue.asyncAfter(deadline: deadline.dispatchTime) { [weak self] in
            guard let waiter = self?.waiting.removeValue(forKey: id) else { return }
            waiter.failure()
        }
    }

    /// Runs the steps whose condition now holds (in the order they began).
    func resume() {
        let due = waiting.keys.sorted().filter { waiting[$0]?.condition() == true }
        // Taken out first: a step may begin the next wait, or resume again.
        let steps = due.compactMap { waiting.removeValue(forKey: $0) }
        for step in steps { step.then() }
    }

    /// The supervisor is stopping: every step fails now, and every later one at once.
    func failAll() {
        closed = true
        let steps = waiting.keys.sorted().compactMap { waiting.removeValue(forKey: $0) }
        for step in steps { step.failure() }
    }
}
