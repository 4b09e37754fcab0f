import ChatWire

/// The frontend's bookkeeping of commands awaiting a reply: a pure state machine
/// (time is passed in), so resend and deadline behaviour is unit-testable.
///
/// A command is resent every `retryInterval` until a reply arrives or
/// `deadline` passes; then it fails and the caller answers `503`. Workers make
/// every write idempotent, so a resend never stores twice.
///
/// Poison commands: a command pending on a queue whose worker crashed or
/// hung (its replacement's heartbeat says so; a SIGKILL from outside does
/// not count) is a suspect. It is resent to the
/// replacement once, and no longer on the timer, so copies cannot pile up in
/// the broker while the worker is down. Pending at `policy.poisonDeaths`
/// deaths, it is given up (`workerReplaced` returns it as poisoned): the
/// caller answers it with an error and nothing resends it again.
public struct PendingRequests<Payload> {
    public typealias Policy = RetryPolicy

    struct Entry {
        var payload: Payload
        var nextRetry: UInt64
        var deadline: UInt64
        var attempts: Int
        /// Worker deaths this command was pending at.
        var deaths = 0
        /// Resent every `retryInterval`; when false only a replacement of
        /// its worker sends it again (`resendNow`, `workerReplaced`).
        var onTimer = true
    }

    /// What the owner must do after `tick`.
    public enum Action {
        case resend(id: String, payload: Payload, attempt: Int)
        case fail(id: String, payload: Payload)
    }

    public let policy: Policy
    private var entries: [String: Entry] = [:]
    /// No entry retries before this (a lower bound: an answered command may
    /// have held it). The bus thread ticks at every wake-up, with up to
    /// thousands of commands pending: a tick before it has nothing to do and
    /// looks at none of them.
    private var earliestRetry = UInt64.max

    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    public var count: Int { entries.count }

    /// Records a command that was just sent; it fails at `deadline`
    /// (default: the policy's deadline from now). `onTimer: false` for a
    /// command too large to copy into the broker at every interval while its
    /// worker is merely slow: it is resent only to a replacement.
    public mutating func add(id: String, payload: Payload, now: UInt64, deadline: UInt64? = nil, onTimer: Bool = true) {
        let deadline = deadline ?? now + policy.deadline
        let nextRetry = onTimer ? min(now + policy.retryInterval, deadline) : deadline
        let entry = Entry(payload: payload, nextRetry: nextRetry, deadline: deadline, attempts: 1, onTimer: onTimer)
        entries[id] = entry
        earliestRetry = min(earliestRetry, entry.nextRetry)
    }

    /// A reply arrived. Returns the payload, or nil for an unknown id (a second
    /// reply to a resent command, or one after its deadline): drop those.
    public mutating func complete(id: String) -> Payload? {
        entries.removeValue(forKey: id)?.payload
    }

    /// Resends due commands and fails expired ones.
    public mutating func tick(now: UInt64) -> [Action] {
        guard now >= earliestRetry else { return [] }
        var actions: [Action] = []
        // The due ones first: changing `entries` while iterating it would copy it.
        let due = entries.compactMap { $0.value.nextRetry <= now ? $0.key : nil }
        for id in due {
            guard var entry = entries[id] else { continue }
            if entry.deadline <= now {
                entries[id] = nil
                actions.append(.fail(id: id, payload: entry.payload))
            } else {
                entry.attempts += 1
                entry.nextRetry = min(now + policy.retryInterval, entry.deadline)
                entries[id] = entry
                actions.append(.resend(id: id, payload: entry.payload, attempt: entry.attempts))
            }
        }
        recomputeEarliestRetry()
        return actions
    }

    private mutating func recomputeEarliestRetry() {
        earliestRetry = entries.values.lazy.map(\.nextRetry).min() ?? .max
    }

    /// Resends now every pending command `matching` says may have been lost
    /// (a worker was killed from outside and replaced): returns them, their
    /// retry timers restarted. No death is counted (see `workerReplaced`).
    public mutating func resendNow(now: UInt64, matching: (Payload) -> Bool) -> [(id: String, payload: Payload)] {
        var due: [(id: String, payload: Payload)] = []
        for (id, entry) in entries where matching(entry.payload) && entry.deadline > now {
            var entry = entry
            entry.attempts += 1
            // A suspect (pending at a crash) stays off the timer, whatever
            // replaced its worker this time; so does one never on it.
            entry.nextRetry = entry.deaths > 0 || !entry.onTimer ? entry.deadline : min(now + policy.retryInterval, entry.deadline)
            entries[id] = entry
            due.append((id, entry.payload))
        }
        recomputeEarliestRetry()
        return due
    }

    /// Whether `id` is still awaiting its reply.
    public func contains(id: String) -> Bool { entries[id] != nil }

    /// A worker that crashed or hung was replaced: every pending command
    /// `matching` says may have died with it counts one death. Returns those to resend now (the timer
    /// no longer resends them: only the next replacement does) and those
    /// that reached `policy.poisonDeaths`, removed: fail them.
    public mutating func workerReplaced(
        now: UInt64, matching: (Payload) -> Bool
    ) -> (resend: [(id: String, payload: Payload)], poisoned: [(id: String, payload: Payload)]) {
        var resend: [(id: String, payload: Payload)] = []
        var poisoned: [(id: String, payload: Payload)] = []
        for (id, entry) in entries where matching(entry.payload) && entry.deadline > now {
            var entry = entry
            entry.deaths += 1
            if entry.deaths >= policy.poisonDeaths {
                entries[id] = nil
                poisoned.append((id, entry.payload))
                continue
            }
            entry.attempts += 1
            // Only the deadline is left on the timer.
            entry.nextRetry = entry.deadline
            entries[id] = entry
            resend.append((id, entry.payload))
        }
        recomputeEarliestRetry()
        return (resend, poisoned)
    }

    /// When `tick` next has work, or nil when nothing is pending. It may be
    /// early (a command answered since held it): that tick then finds nothing
    /// due and sets the next one right.
    public var nextWakeup: UInt64? {
        entries.isEmpty ? nil : earliestRetry
    }

    /// Removes every entry (shutdown), returning their payloads.
    public mutating func removeAll() -> [Payload] {
        defer {
            entries.removeAll()
            earliestRetry = .max
        }
        return entries.values.map(\.payload)
    }
}

/// When a pending command is resent and when it is given up.
public struct RetryPolicy: Sendable {
    public var retryInterval: UInt64
    public var deadline: UInt64
    /// Worker deaths a command may be pending at before it is given up as
    /// poison. Two: one death is any SIGKILL or crash elsewhere; the same
    /// command in flight at the next one too is most likely the cause.
    public var poisonDeaths: Int

    /// - Parameters: nanoseconds. 750 ms lets a replacement worker come up
    ///   (the supervisor restarts within a second) before the first resend.
    public init(retryInterval: UInt64 = 750_000_000, deadline: UInt64 = 10_000_000_000, poisonDeaths: Int = 2) {
        self.retryInterval = retryInterval
        self.deadline = deadline
        self.poisonDeaths = poisonDeaths
    }
}

