import ChatFrontend
import ChatTesting
import Foundation

/// The servers a throughput run loads: the one `chatd serve` chatd-load
/// started, or (`--target`) the frontends of a deployment already running,
/// which may be on other machines. Users and rooms are made through the
/// API, tokens signed with the deployment's secret, as its clients' are.
struct Targets {
    struct Address {
        var host: String
        var port: Int
    }

    let addresses: [Address]
    /// `--split`: each room's members spread over the addresses in turn.
    let split: Bool
    let auth: Authenticator
    /// The processes whose CPU the `cpu:` line reports; nil: none could be
    /// read on this machine, and why.
    let processes: Result<[(name: String, pid: Int32)], TestServerError>
    /// The server chatd-load started (nil with `--target`): its log and `ctl`.
    let local: TestServer?

    init(_ server: TestServer) async {
        addresses = [Address(host: server.host, port: server.port)]
        split = false
        auth = await Authenticator(secret: server.secret)
        processes = .success(meteredProcesses(server))
        local = server
    }

    /// `--target`: the frontends at `urls`, the processes of the hosts
    /// whose control sockets (`--control`) this machine can read.
    init(urls: [String], split: Bool, controls: [String]) async throws {
        guard let secret = ProcessInfo.processInfo.environment["CHAT_JWT_SECRET"], !secret.isEmpty else {
            throw TestServerError(description: "--target: set CHAT_JWT_SECRET to the deployment's secret (tokens are signed with it)")
        }
        addresses = try urls.map(Self.address)
        self.split = split
        auth = await Authenticator(secret: secret)
        processes = deploymentProcesses(controls: controls)
        local = nil
    }

    /// `http://10.0.0.1:8000` (a trailing path is ignored) as a numeric
    /// IPv4 address and a port: the WebSocket client connects by address.
    static func address(_ url: String) throws -> Address {
        guard let parsed = URLComponents(string: url), parsed.scheme == "http", let name = parsed.host, !name.isEmpty else {
            throw TestServerError(description: "--target: not an http:// URL: \(url)")
        }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &found) == 0, let first = found else {
            throw TestServerError(description: "--target: cannot resolve \(name) to an IPv4 address")
        }
        defer { freeaddrinfo(found) }
        let ipv4 = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        return Address(host: String(cString: inet_ntoa(ipv4)), port: parsed.port ?? 80)
    }

    /// Where member `member` of room `room` connects. Without `--split` a
    /// room's members all use one address, rooms taking the addresses in
    /// turn; with it, consecutive members take them in turn (shifted by the
    /// room, so that the senders, the first members, are spread too).
    func address(room: Int, member: Int) -> Address {
        addresses[(split ? room + member : room) % addresses.count]
    }

    func token(sub: String) async throws -> String {
        try await auth.mint(ChatClaims(sub: sub, expires: Date().addingTimeInterval(86_400), email: "\(sub)@example.com", name: nil))
    }

    /// A request to the first address (users, rooms and counts are the
    /// deployment's, whichever frontend host is asked).
    func request(_ method: String, _ path: String, token: String, json: Any? = nil) async throws -> TestServer.HTTPResult {
        try await TestServer.request(host: addresses[0].host, port: addresses[0].port, method, path, token: token, json: json)
    }

    /// A deployment's sockets fail rather than hang: a host that drops
    /// packets stops the connect after 10 s and a send to a peer that stopped
    /// reading after 30 s (as long as a member waits for a frame).
    func webSocket(_ path: String, token: String, room: Int, member: Int) throws -> WebSocketClient {
        let address = address(room: room, member: member)
        let remote = local == nil
        return try WebSocketClient(
            host: address.host, port: address.port, path: path, headers: ["Authorization": "Bearer \(token)"],
            connectTimeout: remote ? 10 : nil, sendTimeout: remote ? 30 : nil)
    }
}

/// The processes of the hosts whose control sockets are at `controls` (a
/// host's `<runtime dir>/control.sock`, or its data directory, whose `run/`
/// holds it): each host's supervisor (its broker on a frontend host) and
/// children from its `ctl status`, named `<host>/<child>`. The pids are
/// read only if they are chatd processes of this machine: a control socket
/// is a file, so it is reachable only where its host runs (network
/// namespaces share one machine's processes); elsewhere nothing is read.
func deploymentProcesses(controls: [String]) -> Result<[(name: String, pid: Int32)], TestServerError> {
    if controls.isEmpty {
        return .failure(TestServerError(description: "no --control: the deployment's processes were not read"))
    }
    var all: [(name: String, pid: Int32)] = []
    for control in controls {
        let socket = control.hasSuffix(".sock") ? control : control + "/run/control.sock"
        guard let answer = try? TestServer.control(socket, "status"),
            let status = (try? JSONSerialization.jsonObject(with: Data(answer.utf8))) as? [String: Any] else {
            return .failure(TestServerError(description: "\(socket) did not answer `status`: the deployment's processes were not read"))
        }
        let hosts = status["hosts"] as? [[String: Any]] ?? []
        let name = hosts.first { $0["this_host"] as? Bool == true }?["host"] as? String ?? "host\(all.count)"
        let children = (status["children"] as? [[String: Any]] ?? []).compactMap { row -> (name: String, pid: Int32)? in
            guard let child = row["child"] as? String, let pid = row["pid"] as? Int else { return nil }
            return ("\(name)/\(child)", Int32(pid))
        }.sorted { $0.name < $1.name }
        // The supervisor is not in its own status: it is its children's parent.
        guard let supervisor = children.first.map({ parentPID($0.pid) }), supervisor > 1,
            ([supervisor] + children.map(\.pid)).allSatisfy(isChatd) else {
            return .failure(TestServerError(description: "the pids of \(socket) are not chatd processes of this machine"))
        }
        all += [(name: "\(name)/supervisor+broker", pid: supervisor)] + children
    }
    return .success(all)
}

/// A process's parent (0 if it is gone).
func parentPID(_ pid: Int32) -> Int32 {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
    return fields.count > 1 ? Int32(fields[1]) ?? 0 : 0
}

/// Whether `pid` runs a binary named chatd (its command line's first word).
func isChatd(_ pid: Int32) -> Bool {
    guard let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")),
        let first = cmdline.split(separator: 0).first else { return false }
    return URL(fileURLWithPath: String(decoding: first, as: UTF8.self)).lastPathComponent == "chatd"
}
