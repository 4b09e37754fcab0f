import ChatConfig
import Foundation
import Logging
import Testing

@testable import ChatSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor while it stops, driven on its queue without `run` (no
/// broker, sockets or signal handlers): what it still does, and what it waits for.
@Suite struct StoppingTests {
    /// A supervisor whose children would be `executable` with their spec's arguments.
    func supervisor(executable: String = "/bin/false") -> Supervisor {
        let config = ChatConfig()
        return Supervisor(
            config: config, reload: { config }, executable: executable, baseArguments: [],
            logger: Logger(label: "test"), graceSeconds: 5
        )
    }

    /// Answers of control commands, collected on the supervisor's queue.
    final class Answers: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [String] = []
        func append(_ answer: String) { lock.withLock { list.append(answer) } }
        var all: [String] { lock.withLock { list } }
    }

    @Test func whileStoppingOnlyStatusIsAnswered() throws {
        let sup = supervisor()
        let answers = Answers()
        sup.queue.sync {
            sup.beginStop(signal: SIGTERM)
            for line in ["restart store", "restart frontend", "scale receipts 2", "scale store 3", "status"] {
                sup.command(line) { answers.append($0) }
            }
            #expect(sup.children.isEmpty, "nothing scaled up while stopping")
        }
        let all = answers.all
        try #require(all.count == 5, "every command answered at once")
        for answer in all.prefix(4) {
            #expect(answer == #"{"error":"the supervisor is stopping; only status is answered"}"#)
        }
        #expect(all[4].contains(#""children":"#) && all[4].contains(#""status":"stopping""#))
    }

    @Test func aReloadThatLandsAfterTheStopChangesNothing() {
        let sup = supervisor()
        var fresh = ChatConfig()
        fresh.receiptsWorkers = 3
        fresh.storeWorkers = 4
        fresh.logLevel = "debug"
        sup.queue.sync {
            sup.beginStop(signal: SIGTERM)
            sup.applyReload(.success(fresh))
            #expect(sup.children.isEmpty && sup.config.receiptsWorkers == 1 && sup.config.logLevel == "info")
        }
    }

    @Test func theStopWaitsForChildrenScaledAwayAndStillExiting() {
        let sup = supervisor()
        // Driven directly: no process behind it, and nothing is sent to the pid.
        let pid: Int32 = 999_999
        var retired = Child()
        let now = Uptime.now()
        _ = retired.handle(.start, now: now)
        _ = retired.handle(.spawned(pid: pid), now: now)
        _ = retired.handle(.stop(restart: false, killAt: now + 60), now: now)
        sup.queue.sync {
            sup.retiring[pid] = retired
            sup.beginStop(signal: SIGTERM)
            #expect(!sup.stopped, "a retired child is still exiting")
            sup.deliver(.exited(.exit(0)), to: .retired(pid: pid))
            #expect(sup.stopped && sup.retiring.isEmpty)
        }
    }

    /// A real child (`sleep 30`) as the frontend, holding the listening socket.
    @Test func theListeningSocketClosesOnceTheFrontendHasExitedDuringAStop() throws {
        let sup = supervisor(executable: "/bin/sleep")
        let socket = try Supervisor.bindListening(host: "127.0.0.1", port: 0)
        let port = try #require(socket.address?.split(separator: ":").last.flatMap { UInt16($0) })
        let before = Self.monotonicSeconds()
        sup.queue.sync {
            sup.listeningSocket = socket
            sup.children[.frontend(0)] = ChildRecord(spec: ChildSpec(name: .frontend(0), arguments: ["30"]), policy: sup.policy)
            sup.deliver(.start, to: .child(.frontend(0)))
        }
        let started = sup.queue.sync { sup.children[.frontend(0)]?.process == nil ? nil : sup.children[.frontend(0)]?.machine.lastStart }
        // The machine is fed the monotonic clock, not the wall clock.
        let start = try #require(started, "the frontend was spawned").seconds
        #expect(start >= before - 0.001 && start <= Self.monotonicSeconds() + 0.001)
        #expect(Self.connectError(port: port) == 0, "while it runs, connections queue")

        sup.queue.sync { sup.beginStop(signal: SIGTERM) }
        var refused = false
        let deadline = Date() + 10
        while !refused && Date() < deadline {
            // SIGCHLD reaps it; reaping here too does not depend on the test process's signal handling.
            sup.queue.sync { sup.spawner.reap() }
            refused = Self.connectError(port: port) == ECONNREFUSED
            if !refused { usleep(20_000) }
        }
        #expect(refused, "once the frontend is gone, connections are refused, not left in the backlog")
        #expect(sup.queue.sync { sup.stopped && sup.listeningSocket == nil })
    }

    @Test func uptimeIsTheMonotonicClock() {
        let now = Uptime.now().seconds
        #expect(abs(now - Self.monotonicSeconds()) < 1)
        #expect(abs(now - Date().timeIntervalSince1970) > 1_000_000, "not the wall clock")
        #expect(Uptime(seconds: 2.5).dispatchTime.uptimeNanoseconds == 2_500_000_000)
        #expect(Uptime.distantFuture.dispatchTime == .distantFuture)
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// 0 if a TCP connection to 127.0.0.1:`port` is accepted (or queued), else errno.
    static func connectError(port: UInt16) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0 ? 0 : errno
    }
}
