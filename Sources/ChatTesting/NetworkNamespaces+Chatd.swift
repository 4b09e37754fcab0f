import ChatFrontend
import Foundation

extension NetworkNamespaces {
    /// The HTTP port every chatd host listens on (each host has its own address).
    public static let httpPort = 8000
    /// The bus's base port at a frontend host (it takes this and the next ones).
    public static let busPort = 7400

    /// A chatd host's setting: what it runs, the broker whose bus it joins
    /// (nil: none, a workers host given `CHAT_PEERS`), anything else
    /// (`CHAT_*`); its data and runtime directories are its own. A host
    /// given keys (`giveKeys`) has its bus authenticated and encrypted
    /// (CURVE); one without is told the network is trusted (`bus.insecure`).
    public func chatdEnvironment(on host: Host, run: String, bus: Host?, secret: String, _ extra: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CHAT_") }
        environment.merge([
            "CHAT_RUN": run,
            // Its name in `ctl status` across hosts.
            "CHAT_HOST": host.name,
            "CHAT_LISTEN": "\(host.address):\(Self.httpPort)",
            "CHAT_DATA_DIR": host.directory + "/data",
            "CHAT_RUNTIME_DIR": host.directory + "/run",
            "CHAT_JWT_SECRET": secret,
            "CHAT_FRONTENDS": "1",
            "CHAT_STORE_WORKERS": "1",
            "CHAT_LOG_LEVEL": "info",
        ]) { $1 }
        if let bus { environment["CHAT_BUS"] = Self.busAddress(of: bus) }
        if FileManager.default.fileExists(atPath: Self.keyFile(of: host)) {
            environment["CHAT_BUS_KEY"] = Self.keyFile(of: host)
            environment["CHAT_BUS_PEER_KEYS"] = Self.peersFile(of: host)
        } else {
            environment["CHAT_BUS_INSECURE"] = "true"
        }
        environment.merge(extra) { $1 }
        return environment
    }

    /// `host`'s bus key pair (`bus.key`), made by `giveKeys`.
    public static func keyFile(of host: Host) -> String { host.directory + "/bus.key" }
    /// `host`'s copy of the deployment's peers file (`bus.peerKeys`).
    public static func peersFile(of host: Host) -> String { host.directory + "/bus-peers" }

    /// A key pair for each of `hosts` from `chatd keygen` (a broker's line
    /// names its bus address: those in `brokers`), and the deployment's
    /// peers file, every host's line, in each one's directory. Returns each
    /// host's line by name.
    @discardableResult
    public func giveKeys(to hosts: [Host], brokers: [Host]) throws -> [String: String] {
        var lines: [String: String] = [:]
        for host in hosts {
            var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CHAT_") }
            if brokers.contains(where: { $0.name == host.name }) {
                environment.merge(["CHAT_RUN": "frontend", "CHAT_BUS": Self.busAddress(of: host)]) { $1 }
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try TestServer.binary())
            process.arguments = ["keygen", "--out", Self.keyFile(of: host), "--host", host.name]
            process.environment = environment
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            // The last line printed is the one for the peers file.
            guard process.terminationStatus == 0, let line = output.split(separator: "\n").last else {
                throw TestServerError(description: "chatd keygen for \(host.name): \(output)")
            }
            lines[host.name] = String(line)
        }
        let peers = hosts.compactMap { lines[$0.name] }.joined(separator: "\n") + "\n"
        for host in hosts { try writePeers(peers, on: host) }
        return lines
    }

    /// Writes `text` as `host`'s peers file.
    public func writePeers(_ text: String, on host: Host) throws {
        try text.write(toFile: Self.peersFile(of: host), atomically: true, encoding: .utf8)
    }

    /// The bus address of the broker on `host` (a frontend host).
    public static func busAddress(of host: Host) -> String { "tcp://\(host.address):\(busPort)" }

    /// `chatd serve` on `host` with `environment`, logging to the host's `chatd.log`.
    public func startChatd(on host: Host, environment: [String: String]) throws -> Process {
        try run(on: host, [try TestServer.binary(), "serve", "--die-with-parent"], environment: environment, log: host.directory + "/chatd.log")
    }

    /// A client's handle on the chatd serving HTTP on `host` (started with
    /// `startChatd`), once its `/healthz` answers 200 from the test's side of
    /// the bridge: every worker role, wherever it runs, answers its frontend
    /// (`healthy: false`: once it answers at all).
    public func server(on host: Host, process: Process, secret: String, healthy: Bool = true, timeout: Double = 60) async throws -> TestServer {
        let server = TestServer(
            port: Self.httpPort, host: host.address, dataDir: host.directory + "/data", secret: secret, process: process,
            logPath: host.directory + "/chatd.log", auth: await Authenticator(secret: secret)
        )
        do {
            try await server.waitUntil(timeout: timeout, "healthz on \(host.name)") {
                let status = try? await server.request("GET", "/healthz", timeout: 2).status
                return healthy ? status == 200 : status != nil
            }
        } catch {
            throw TestServerError(description: "\(error)\n--- \(host.name) log ---\n\(server.log)")
        }
        return server
    }

    /// The `ctl status` of the chatd on `host`, on its control socket (a file: reachable from any namespace).
    public func status(of host: Host) throws -> [String: Any] {
        let answer = try TestServer.control(host.directory + "/run/control.sock", "status")
        return (try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]) ?? [:]
    }

    /// A log of `host`'s chatd so far.
    public func log(of host: Host) -> String {
        (try? String(contentsOfFile: host.directory + "/chatd.log", encoding: .utf8)) ?? ""
    }

    /// A random HS256 secret for the hosts of one test (every frontend host verifies with it).
    public static func secret() -> String {
        (0..<4).map { _ in String(format: "%016llx", UInt64.random(in: 0...UInt64.max)) }.joined()
    }
}
