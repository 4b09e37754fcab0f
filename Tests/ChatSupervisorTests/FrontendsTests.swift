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
        #expect(specs.filter { !$0.name.isFrontend && !$0.name.isStandby }.count == 5, "store.0, receipts.0, search.0, files.0, webhooks.0")
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

    /// Real children from `script` (a stand-in frontend): each closes the
    /// socket it inherits (only the supervisor's copy keeps it listening),
    /// says it is up, and on SIGUSR1 writes its name to `signalled`.
    struct StandIn {
        let dir: String
        var script: String { dir + "/frontend.sh" }
        var signalled: [String] { lines("signalled") }
        /// Frontends that came up (a reload may start a receipts worker from the script too).
        var up: [String] { lines("up").filter { FrontendSlot($0) != nil } }

        init() throws {
            dir = NSTemporaryDirectory() + "chatd-frontends-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let text = """
                #!/bin/bash
                eval "exec $CHATD_LISTEN_FD>&-"
                trap 'echo "$CHATD_CHILD" >> \(dir)/signalled; kill $!; exit 0' USR1
                trap 'kill $!; exit 0' TERM
                sleep 30 &
                echo "$CHATD_CHILD" >> \(dir)/up
                wait
                """
            try text.write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
        }

        func lines(_ name: String) -> [String] {
            ((try? String(contentsOfFile: dir + "/" + name, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
    }

    /// A supervisor of `frontends` stand-ins on a port of its own, listening.
    func serving(_ standIn: StandIn, frontends: Int) throws -> (Supervisor, port: UInt16) {
        let sup = supervisor(frontends: frontends, executable: standIn.script)
        let socket = try Supervisor.bindListening(host: "127.0.0.1", port: 0, reusePort: true)
        let port = try #require(socket.address?.split(separator: ":").last.flatMap { UInt16($0) })
        sup.config.listen = "127.0.0.1:\(port)"
        sup.queue.sync { sup.listeningSocket = socket }
        return (sup, port)
    }

    /// Reaps until `condition` holds (10 s at most).
    func reapUntil(_ sup: Supervisor, _ condition: () -> Bool) -> Bool {
        let deadline = Date() + 10
        while !condition() && Date() < deadline {
            sup.queue.sync { sup.spawner.reap() }
            usleep(20_000)
        }
        return condition()
    }

    /// Stops the supervisor and waits for its children.
    func stop(_ sup: Supervisor) {
        sup.queue.sync { sup.beginStop(signal: SIGTERM) }
        _ = reapUntil(sup) { sup.queue.sync { sup.stopped } }
    }

    /// A reload that changes `frontends` adds slots, or retires the highest:
    /// the retired one gets SIGUSR1 (1012 to its clients) and its socket closes.
    @Test func aReloadAddsAndRetiresFrontends() throws {
        let standIn = try StandIn()
        let (sup, port) = try serving(standIn, frontends: 1)
        defer { stop(sup) }
        var fresh = sup.config
        sup.queue.sync {
            sup.add(sup.frontendSpec(0))
            fresh.frontends = 3
            sup.applyReload(.success(fresh))
            #expect(sup.frontendSlots == [0, 1, 2] && sup.frontendCount == 3)
        }
        #expect(reapUntil(sup) { Set(standIn.up) == ["frontend.0", "frontend.1", "frontend.2"] }, "\(standIn.up)")
        let retired = try #require(sup.queue.sync { sup.slotSockets[2] })
        sup.queue.sync {
            fresh.frontends = 2
            sup.applyReload(.success(fresh))
            #expect(sup.frontendSlots == [0, 1] && sup.frontendCount == 2)
            #expect(sup.slotSockets[2] == nil && Supervisor.localAddress(retired.fd) != retired.address, "frontend.2's socket closed")
        }
        #expect(reapUntil(sup) { standIn.signalled == ["frontend.2"] }, "frontend.2 got SIGUSR1: \(standIn.signalled)")
        #expect(reapUntil(sup) { sup.queue.sync { sup.retiring.isEmpty } }, "frontend.2 exited")
        #expect(Self.connects(port: port), "frontend.0 and frontend.1 still listen")
    }

    /// A frontend stopped for a planned restart (or exited) while a sibling
    /// serves: its socket closes, so new connections go to the sibling; its
    /// next process gets a fresh one on the same port. Slot 0's too.
    @Test func aStoppedSlotsSocketClosesWhileASiblingRuns() throws {
        let standIn = try StandIn()
        let (sup, port) = try serving(standIn, frontends: 2)
        defer { stop(sup) }
        sup.queue.sync { for slot in 0..<2 { sup.add(sup.frontendSpec(slot)) } }
        #expect(reapUntil(sup) { Set(standIn.up) == ["frontend.0", "frontend.1"] }, "\(standIn.up)")
        for (slot, restartedBefore) in [(1, 0), (0, 1)] {
            let (before, pid) = try #require(sup.queue.sync { () -> (ListeningSocket, Int32)? in
                guard let socket = sup.slotSocket(slot), let pid = sup.children[.frontend(slot)]?.process?.pid else { return nil }
                return (socket, pid)
            })
            sup.queue.sync {
                sup.rollingRestart([.frontend(slot)], done: []) { _ in }
                #expect(sup.slotSocket(slot) == nil && Supervisor.localAddress(before.fd) != before.address, "frontend.\(slot)'s socket closed")
            }
            #expect(Self.connects(port: port), "the sibling's socket takes connections")
            #expect(reapUntil(sup) { standIn.signalled.count == restartedBefore + 1 }, "frontend.\(slot) got SIGUSR1")
            #expect(reapUntil(sup) { sup.queue.sync { sup.children[.frontend(slot)]?.process.map { $0.pid != pid } ?? false } }, "frontend.\(slot) again")
            let after = try #require(sup.queue.sync { sup.slotSocket(slot) }, "frontend.\(slot)'s next process got a socket")
            #expect(after.address == before.address)
            #expect(reapUntil(sup) { standIn.up.count == 3 + restartedBefore })
        }
    }

    /// With no sibling running, a stopped frontend's socket stays: connections
    /// wait in its backlog for the restart.
    @Test func theOnlyFrontendsSocketStaysThroughItsRestart() throws {
        let standIn = try StandIn()
        let (sup, port) = try serving(standIn, frontends: 1)
        defer { stop(sup) }
        sup.queue.sync { sup.add(sup.frontendSpec(0)) }
        #expect(reapUntil(sup) { standIn.up == ["frontend.0"] })
        sup.queue.sync {
            sup.rollingRestart([.frontend(0)], done: []) { _ in }
            #expect(sup.listeningSocket != nil)
        }
        #expect(Self.connects(port: port))
        #expect(reapUntil(sup) { standIn.up.count == 2 })
    }

    /// Two real children as frontend.0 and frontend.1, the second ignoring
    /// SIGTERM (a frontend still draining): at a stop, the listening sockets
    /// (one per slot, on one port) stay open until the last frontend is gone.
    @Test func theListeningSocketClosesOnlyOnceEveryFrontendHasExited() throws {
        let sup = supervisor(frontends: 2, executable: "/bin/bash")
        let socket = try Supervisor.bindListening(host: "127.0.0.1", port: 0, reusePort: true)
        let port = try #require(socket.address?.split(separator: ":").last.flatMap { UInt16($0) })
        sup.config.listen = "127.0.0.1:\(port)"
        // Each closes the socket it inherits: only the supervisor's copies
        // keep the port listening, so `connects` tells whether it closed them.
        let scripts = ["eval \"exec $CHATD_LISTEN_FD>&-\"; exec sleep 30", "eval \"exec $CHATD_LISTEN_FD>&-\"; trap '' TERM; exec sleep 30"]
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
