import ChatConfig
import ChatWire
import Foundation
import Logging
import Testing

@testable import ChatSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// Several frontends as the supervisor's children: their names, the signal
/// that restarts one (1012 to its clients), how many a configuration or a
/// reload asks for, and a stop that waits for every one of them.
@Suite struct FrontendsTests {
    func supervisor(frontends: Int, executable: String = "/bin/false") -> Supervisor {
        var config = ChatConfig()
        config.frontends = frontends
        config.storeWorkers = 1
        let fixed = config
        return Supervisor(
            config: config, reload: { fixed }, executable: executable, baseArguments: [],
            logger: Logger(label: "test"), graceSeconds: 5
        )
    }

    @Test func frontendNamesReadBackAsWritten() {
        for slot in [0, 1, 9, 10, 63, 999] {
            let name = ChildName.frontend(slot)
            #expect(name.description == "frontend.\(slot)")
            #expect(ChildName(name.description) == name)
            #expect(name.role == "frontend" && name.isFrontend && name.worker == nil)
        }
        for text in ["frontend", "frontend.", "frontend.01", "frontend.-1", "frontend.+1", "frontend.1000", "frontend.1.2", "frontends.1", "Frontend.1"] {
            #expect(ChildName(text) == nil, "\(text)")
        }
        #expect(ChildName("store.0") == .worker(WorkerName(.store, 0)))
        #expect(ChildName("store.0")?.isFrontend == false)
    }

    @Test func restartWordsPickOneFrontendOrAll() {
        let names: [ChildName] = [.frontend(0), .frontend(1), .worker(WorkerName(.store, 0)), .worker(WorkerName(.receipts, 0))]
        #expect(names.filter { $0.matches("frontend") } == [.frontend(0), .frontend(1)])
        #expect(names.filter { $0.matches("frontend.1") } == [.frontend(1)])
        #expect(names.filter { $0.matches("store") } == [.worker(WorkerName(.store, 0))])
        #expect(names.filter { $0.matches("frontend.2") }.isEmpty)
    }

    /// A frontend stopped while the service goes on gets SIGUSR1 (it closes
    /// WebSockets with 1012); a worker, and any child at a full stop, SIGTERM.
    @Test func theStopSignalIsTheOneAsked() {
        #expect(ChildName.frontend(0).restartSignal == SIGUSR1)
        #expect(ChildName.worker(WorkerName(.store, 0)).restartSignal == SIGTERM)
        let t0 = Uptime(seconds: 1_000)
        var child = Child()
        _ = child.handle(.start, now: t0)
        _ = child.handle(.spawned(pid: 100), now: t0)
        #expect(child.handle(.stop(restart: true, killAt: t0 + 5, signal: SIGUSR1), now: t0 + 1) == [.kill(pid: 100, signal: SIGUSR1), .wake(at: t0 + 5)])
        var other = Child()
        _ = other.handle(.start, now: t0)
        _ = other.handle(.spawned(pid: 101), now: t0)
        #expect(other.handle(.stop(restart: false, killAt: t0 + 5), now: t0 + 1) == [.kill(pid: 101, signal: SIGTERM), .wake(at: t0 + 5)])
    }

    @Test func theConfigurationSaysHowManyFrontends() {
        let specs = supervisor(frontends: 3).specs
        #expect(specs.filter(\.name.isFrontend).map(\.name) == [.frontend(0), .frontend(1), .frontend(2)])
        #expect(specs.first?.arguments == ["frontend", "--shards", "1"])
        #expect(specs.filter { !$0.name.isFrontend }.count == 4, "store.0, receipts.0, search.0, files.0")
    }

    /// A reload that changes `frontends` adds slots, or retires the highest.
    /// A second server of the same user cannot quietly share a port that
    /// SO_REUSEPORT would let it join; the frontends' slots can.
    @Test func aPortInUseIsRefusedButSlotsJoinIt() throws {
        let first = try Supervisor.bindListening(host: "127.0.0.1", port: 0, reusePort: true)
        defer { close(first.fd) }
        let port = try #require(first.address?.split(separator: ":").last.flatMap { Int($0) })
        #expect(throws: ConfigError.self) { try Supervisor.bindListening(host: "127.0.0.1", port: port, reusePort: true) }
        let slot = try Supervisor.bindListening(host: "127.0.0.1", port: port, reusePort: true, joining: true)
        close(slot.fd)
    }

    @Test func aReloadAddsAndRetiresFrontends() {
        let sup = supervisor(frontends: 1)
        var fresh = sup.config
        sup.queue.sync {
            sup.add(sup.frontendSpec(0))
            fresh.frontends = 3
            sup.applyReload(.success(fresh))
            #expect(sup.frontendSlots == [0, 1, 2] && sup.frontendCount == 3)
            fresh.frontends = 2
            sup.applyReload(.success(fresh))
            #expect(sup.frontendSlots == [0, 1] && sup.frontendCount == 2)
            sup.beginStop(signal: SIGTERM)
        }
    }

    /// Two real children as frontend.0 and frontend.1, the second ignoring
    /// SIGTERM (a frontend still draining): at a stop, the listening sockets
    /// (one per slot, on one port) stay open until the last frontend is gone.
    @Test func theListeningSocketClosesOnlyOnceEveryFrontendHasExited() throws {
        let sup = supervisor(frontends: 2, executable: "/bin/sh")
        let socket = try Supervisor.bindListening(host: "127.0.0.1", port: 0, reusePort: true)
        let port = try #require(socket.address?.split(separator: ":").last.flatMap { UInt16($0) })
        sup.config.listen = "127.0.0.1:\(port)"
        let scripts = ["exec sleep 30", "trap '' TERM; exec sleep 30"]
        let draining = try #require(sup.queue.sync { () -> Int32? in
            sup.listeningSocket = socket
            for slot in 0..<2 {
                sup.children[.frontend(slot)] = ChildRecord(spec: ChildSpec(name: .frontend(slot), arguments: ["-c", scripts[slot]]), policy: sup.policy)
                sup.deliver(.start, to: .child(.frontend(slot)))
            }
            return sup.children[.frontend(1)]?.process?.pid
        })
        defer { kill(draining, SIGKILL) }
        // frontend.1 got a socket of its own on the same port (SO_REUSEPORT).
        let own = try #require(sup.queue.sync { sup.slotSockets[1] })
        #expect(own.fd != socket.fd && own.address == socket.address)
        let deadline = Date() + 10
        // The shell has set its trap once it has become `sleep`.
        func command(_ pid: Int32) -> String? { try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) }
        while command(draining) != "sleep\n" && Date() < deadline { usleep(5_000) }
        sup.queue.sync { sup.beginStop(signal: SIGTERM) }
        func reapUntil(_ condition: () -> Bool) -> Bool {
            while !condition() && Date() < deadline {
                sup.queue.sync { sup.spawner.reap() }
                usleep(20_000)
            }
            return condition()
        }
        #expect(reapUntil { sup.queue.sync { sup.children[.frontend(0)]?.process == nil } }, "frontend.0 exits on SIGTERM")
        #expect(Self.connects(port: port), "one frontend still runs: connections queue")
        #expect(sup.queue.sync { sup.listeningSocket != nil && !sup.stopped })
        kill(draining, SIGKILL)
        #expect(reapUntil { !Self.connects(port: port) }, "the last frontend gone, connections are refused")
        #expect(reapUntil { sup.queue.sync { sup.stopped && sup.listeningSocket == nil && sup.slotSockets.isEmpty } })
    }

    /// A TCP connection to 127.0.0.1:`port` is accepted (or queued).
    static func connects(port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
