import Foundation
import Logging

/// A lock that makes one process of all hosts the owner of a store shard
/// (PostgreSQL: a session advisory lock on a connection of its own). With
/// several workers hosts every host runs `store.<n>`; only the holder may
/// read shard n's queue, or the brokers deal its commands to both and two
/// writers publish one room's messages out of order.
public protocol ShardLock: AnyObject {
    /// Takes the lock without waiting: true if this process holds it now.
    /// False also when the database cannot be reached (tried again later).
    func tryLock(shard: Int) -> Bool
    /// Whether the session that holds the lock still lives: when it ends,
    /// the database released the lock and another host may hold it.
    func isAlive() -> Bool
}

/// When to try the lock and when to check its session, and what follows:
/// a pure machine (time passed in, actions returned).
public struct ShardOwnershipMachine: Equatable {
    public enum State: Equatable { case waiting, owning, lost }
    public enum Action: Equatable {
        case tryLock
        case checkSession
        /// The lock is held: serve the shard.
        case take
        /// The lock's session ended: stop at once, never write on without it.
        case exit
    }

    /// A second between tries: the other host's worker takes a shard within
    /// about a second of its holder's exit, at one cheap query a second.
    public static let retryNanos: UInt64 = 1_000_000_000
    /// The holder checks its session as often: a lost lock is noticed within a second.
    public static let checkNanos: UInt64 = 1_000_000_000

    public private(set) var state = State.waiting
    /// When the next try or check is due (monotonic nanoseconds).
    public private(set) var dueAt: UInt64

    /// The first try is due at once.
    public init(now: UInt64) { dueAt = now }

    /// The try or the check that is due, if any.
    public func tick(now: UInt64) -> Action? {
        guard now >= dueAt else { return nil }
        switch state {
        case .waiting: return .tryLock
        case .owning: return .checkSession
        case .lost: return nil
        }
    }

    /// A try's result.
    public mutating func tried(gotLock: Bool, now: UInt64) -> Action? {
        guard state == .waiting else { return nil }
        if gotLock {
            state = .owning
            dueAt = now &+ Self.checkNanos
            return .take
        }
        dueAt = now &+ Self.retryNanos
        return nil
    }

    /// A check's result.
    public mutating func checked(alive: Bool, now: UInt64) -> Action? {
        guard state == .owning else { return nil }
        guard alive else {
            state = .lost
            return .exit
        }
        dueAt = now &+ Self.checkNanos
        return nil
    }
}

/// Drives a `ShardOwnershipMachine` with a `ShardLock` for one store worker.
public final class ShardOwner {
    private let lock: any ShardLock
    private var machine: ShardOwnershipMachine
    private let logger: Logger

    public init(lock: any ShardLock, logger: Logger) {
        self.lock = lock
        self.logger = logger
        machine = ShardOwnershipMachine(now: Self.now())
    }

    /// Blocks until this process holds shard `shard`'s lock (true) or
    /// `shouldStop` (false), calling `heartbeat` every 500 ms while it waits:
    /// the waiting worker is alive, not hung.
    public func waitForLock(shard: Int, shouldStop: () -> Bool, heartbeat: () -> Void) -> Bool {
        let started = Self.now()
        var logged = false
        while !shouldStop() {
            let now = Self.now()
            if machine.tick(now: now) == .tryLock {
                if machine.tried(gotLock: lock.tryLock(shard: shard), now: Self.now()) == .take {
                    logger.info("holds the shard's lock; serving it", metadata: [
                        "shard": "\(shard)", "waited.ms": "\((Self.now() - started) / 1_000_000)",
                    ])
                    return true
                }
                if !logged {
                    logger.notice("another host's store worker holds the shard's lock; waiting for it", metadata: ["shard": "\(shard)"])
                    logged = true
                }
            }
            // Only once the first try failed: a worker that takes its shard at
            // once says READY=1 when its links are echoed, as before.
            heartbeat()
            usleep(500_000)
        }
        return false
    }

    /// Called from the serving loop (every 500 ms): checks the lock's session
    /// when due and exits the process if it ended.
    public func check() {
        let now = Self.now()
        guard machine.tick(now: now) == .checkSession else { return }
        if machine.checked(alive: lock.isAlive(), now: Self.now()) == .exit {
            logger.critical("lost the shard's lock (its database session ended); exiting so that no other writer serves it alongside")
            exit(1)
        }
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}
