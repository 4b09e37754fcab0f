import ChatPostgres
import ChatTesting
import Foundation
import Logging
import Testing

@testable import ChatWorkers

/// When a store worker tries its shard's lock, when it checks the lock's
/// session, and what follows from each answer.
@Suite struct ShardOwnershipMachineTests {
    let second = ShardOwnershipMachine.retryNanos

    @Test func theFirstTryIsDueAtOnceAndAFailedOneIsRetriedASecondLater() {
        var machine = ShardOwnershipMachine(now: 100)
        #expect(machine.tick(now: 100) == .tryLock)
        #expect(machine.tried(gotLock: false, now: 110) == nil)
        #expect(machine.state == .waiting)
        #expect(machine.tick(now: 110 + second - 1) == nil)
        #expect(machine.tick(now: 110 + second) == .tryLock)
    }

    @Test func aTakenLockIsServedAndItsSessionCheckedEverySecond() {
        var machine = ShardOwnershipMachine(now: 0)
        #expect(machine.tried(gotLock: true, now: 5) == .take)
        #expect(machine.state == .owning)
        #expect(machine.tick(now: 5 + ShardOwnershipMachine.checkNanos - 1) == nil)
        #expect(machine.tick(now: 5 + ShardOwnershipMachine.checkNanos) == .checkSession)
        #expect(machine.checked(alive: true, now: 2 * second) == nil)
        #expect(machine.tick(now: 2 * second) == nil)
        #expect(machine.tick(now: 3 * second) == .checkSession)
    }

    @Test func aSessionThatEndedExitsAndNothingFollows() {
        var machine = ShardOwnershipMachine(now: 0)
        _ = machine.tried(gotLock: true, now: 0)
        #expect(machine.checked(alive: false, now: second) == .exit)
        #expect(machine.state == .lost)
        #expect(machine.tick(now: 10 * second) == nil)
        // A late try's answer cannot make a lost owner serve again.
        #expect(machine.tried(gotLock: true, now: 10 * second) == nil)
        #expect(machine.state == .lost)
    }

    @Test func answersOutOfTheirStateAreIgnored() {
        var machine = ShardOwnershipMachine(now: 0)
        #expect(machine.checked(alive: false, now: 0) == nil)
        #expect(machine.state == .waiting)
        _ = machine.tried(gotLock: true, now: 0)
        #expect(machine.tried(gotLock: false, now: 0) == nil)
        #expect(machine.state == .owning)
    }
}

/// The PostgreSQL lock itself: one holder per shard among sessions, released
/// when its holder's session ends. Skipped without a PostgreSQL server.
/// Serialized: run side by side, the two blocking tests hung (each holds a
/// thread of the cooperative pool, which has two here, while the shared
/// server starts).
@Suite(.enabled(if: PostgresServer.isInstalled), .serialized) struct PostgresShardLockTests {
    @Test func oneSessionHoldsAShardUntilItEnds() throws {
        let server = try PostgresServer.start()
        let url = try server.createDatabase()
        defer { server.dropDatabase(url: url) }
        let settings = try PostgresSettings(url: url)
        var first: PostgresShardLock? = PostgresShardLock(settings: settings, logger: .init(label: "test"))
        let second = PostgresShardLock(settings: settings, logger: .init(label: "test"))
        #expect(first?.tryLock(shard: 3) == true)
        #expect(first?.isAlive() == true)
        #expect(!second.tryLock(shard: 3))
        #expect(!second.isAlive())
        #expect(second.tryLock(shard: 4))
        first = nil  // its session closes: PostgreSQL releases the lock once its backend has ended
        let deadline = Date().addingTimeInterval(10)
        var taken = second.tryLock(shard: 3)
        while !taken, Date() < deadline {
            usleep(50_000)
            taken = second.tryLock(shard: 3)
        }
        #expect(taken)
    }

    @Test func aTerminatedSessionIsNoLongerAlive() throws {
        let server = try PostgresServer.start()
        let url = try server.createDatabase()
        defer { server.dropDatabase(url: url) }
        let lock = PostgresShardLock(settings: try PostgresSettings(url: url), logger: .init(label: "test"))
        #expect(lock.tryLock(shard: 0))
        let database = String(url.split(separator: "/").last!)
        _ = try server.psql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = \(0x6368_6174) AND objid = 0 AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = '\(database)')")
        #expect(!lock.isAlive())
        let other = PostgresShardLock(settings: try PostgresSettings(url: url), logger: .init(label: "test"))
        #expect(other.tryLock(shard: 0))
    }
}
