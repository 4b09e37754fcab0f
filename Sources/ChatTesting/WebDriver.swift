import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A chromedriver process on a loopback port, and the headless Chromium
/// browsers it drives over the W3C WebDriver protocol (JSON over HTTP), for
/// the browser end-to-end tests. Blocking, like `WebSocketClient`: each call
/// is one HTTP request to chromedriver, and waits poll with a deadline.
public final class WebDriver: @unchecked Sendable {
    /// What the tests need installed, named in the error when it is not.
    public static let packages = "chromium chromium-driver"

    public let port: Int
    public let process: Process
    private let logPath: String
    private let lock = NSLock()
    private var browsers: [BrowserSession] = []
    private var stopped = false

    /// chromedriver (`CHROMEDRIVER` or /usr/bin/chromedriver) and chromium
    /// (`CHROMIUM` or /usr/bin/chromium), or an error naming their packages.
    public static func binaries(environment env: [String: String] = ProcessInfo.processInfo.environment) throws -> (driver: String, browser: String) {
        let driver = env["CHROMEDRIVER"] ?? "/usr/bin/chromedriver", browser = env["CHROMIUM"] ?? "/usr/bin/chromium"
        for path in [driver, browser] where !FileManager.default.isExecutableFile(atPath: path) {
            throw WebDriverError(
                description: "\(path) not found: the browser tests need the Debian packages \(packages) (`.ci/setup tests` installs them)"
            )
        }
        return (driver, browser)
    }

    /// Starts chromedriver on a free loopback port and waits until `/status` says ready.
    public static func start(timeout: Double = 20) throws -> WebDriver {
        let (driver, browser) = try binaries()
        // A port free now may be taken before chromedriver binds it: try a few.
        var lastError: Error?
        for _ in 0..<3 {
            let port = try TestServer.freePort()
            let logPath = NSTemporaryDirectory() + "chromedriver-\(port).log"
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: driver)
            // No `--allowed-ips`: with it chromedriver listens on every
            // interface; without it only on 127.0.0.1 and ::1.
            process.arguments = ["--port=\(port)"]
            do {
                let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
                process.standardOutput = log
                process.standardError = log
                try process.run()
            } catch {
                try? FileManager.default.removeItem(atPath: logPath)
                throw error
            }
            let webDriver = WebDriver(port: port, process: process, logPath: logPath, browserBinary: browser)
            do {
                try webDriver.waitUntilReady(timeout: timeout)
                return webDriver
            } catch {
                lastError = error
                webDriver.stop()
            }
        }
        throw lastError ?? WebDriverError(description: "chromedriver did not start")
    }

    let browserBinary: String

    init(port: Int, process: Process, logPath: String, browserBinary: String) {
        self.port = port
        self.process = process
        self.logPath = logPath
        self.browserBinary = browserBinary
    }

    deinit { stop() }

    private func waitUntilReady(timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = "no answer"
        while Date() < deadline {
            guard process.isRunning else { break }
            do {
                let status = try WebDriverHTTP.call("GET", URL(string: "http://127.0.0.1:\(port)/status")!, nil, timeout: 2)
                if (status as? [String: Any])?["ready"] as? Bool == true { return }
                last = "\(String(describing: status))"
            } catch {
                last = "\(error)"
            }
            usleep(50_000)
        }
        let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        throw WebDriverError(description: "chromedriver not ready on port \(port) (\(last))\n--- chromedriver log ---\n\(log)")
    }

    /// A new headless Chromium with a `width`×`height` viewport and its own
    /// temporary profile; `arguments` are further command-line flags.
    public func browser(width: Int = 1280, height: Int = 900, arguments: [String] = []) throws -> BrowserSession {
        let profile = try TestServer.temporaryDirectory()
        // The profile's path is unique: `stop` finds this browser's processes by it.
        // /dev/shm is small in containers: Chromium's shared memory goes to /tmp instead.
        let args = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=\(width),\(height)",
            "--user-data-dir=\(profile)",
        ] + arguments
        var options: [String: Any] = ["binary": browserBinary, "args": args]
        // A window is never narrower than 500 px: a phone's width is emulated.
        if width < 500 { options["mobileEmulation"] = ["deviceMetrics": ["width": width, "height": height, "pixelRatio": 1]] }
        let capabilities: [String: Any] = [
            "capabilities": [
                "alwaysMatch": [
                    "browserName": "chrome",
                    "goog:chromeOptions": options,
                    // The page's console, for the message of a failed wait.
                    "goog:loggingPrefs": ["browser": "ALL"],
                ] as [String: Any]
            ]
        ]
        let base = URL(string: "http://127.0.0.1:\(port)")!
        let created: Any?
        do {
            created = try WebDriverHTTP.call("POST", base.appendingPathComponent("session"), capabilities, timeout: 60)
        } catch {
            try? FileManager.default.removeItem(atPath: profile)
            throw error
        }
        guard let id = (created as? [String: Any])?["sessionId"] as? String else {
            try? FileManager.default.removeItem(atPath: profile)
            throw WebDriverError(description: "new session: no sessionId in \(String(describing: created))")
        }
        let browser = BrowserSession(base: base.appendingPathComponent("session/\(id)"), profile: profile)
        lock.withLock { browsers.append(browser) }
        return browser
    }

    /// Quits every browser still open, then stops chromedriver: its
    /// `/shutdown` (it takes SIGTERM only after seconds), SIGKILL after 5 s.
    /// A chromedriver that does not answer its `/status` within 2 s (hung,
    /// stopped) is not asked anything more: its browsers' processes and then
    /// it are SIGKILLed at once, rather than after each quit's 20 s.
    /// Safe to call twice. A chromedriver that had exited by itself has its log printed.
    public func stop() {
        let (first, opened) = lock.withLock {
            defer { stopped = true }
            return (!stopped, browsers)
        }
        guard first else { return }
        let answers = process.isRunning && (try? WebDriverHTTP.call("GET", URL(string: "http://127.0.0.1:\(port)/status")!, nil, timeout: 2)) != nil
        for browser in opened { browser.quit(ask: answers) }
        defer { try? FileManager.default.removeItem(atPath: logPath) }
        guard process.isRunning else {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            print("chromedriver on port \(port) had exited (status \(process.terminationStatus))\n--- chromedriver log ---\n\(log)")
            return
        }
        if answers { _ = try? WebDriverHTTP.call("GET", URL(string: "http://127.0.0.1:\(port)/shutdown")!, nil, timeout: 2) }
        let deadline = Date().addingTimeInterval(answers ? 5 : 0)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            // Chromium outlives a SIGKILLed chromedriver (re-parented to
            // init, its profile open): its processes go first, by pid.
            for browser in opened { browser.killProcesses() }
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        for browser in opened { try? FileManager.default.removeItem(atPath: browser.profile) }
    }
}

/// One browser session: a headless Chromium window.
public final class BrowserSession: @unchecked Sendable {
    /// The W3C name of an element reference in JSON.
    static let elementKey = "element-6066-11e4-a52e-4f735466cecf"
    /// WebDriver's code for the Enter key, for `sendKeys`.
    public static let enter = "\u{E007}"

    let base: URL
    let profile: String
    private let lock = NSLock()
    private var quitted = false

    init(base: URL, profile: String) {
        self.base = base
        self.profile = profile
    }

    /// One WebDriver command of this session: the response's `value`.
    @discardableResult
    public func command(_ method: String, _ path: String, _ body: Any? = nil) throws -> Any? {
        let url = path.isEmpty ? base : base.appendingPathComponent(path)
        return try WebDriverHTTP.call(method, url, body ?? (method == "POST" ? [String: Any]() : nil), timeout: 60)
    }

    public func navigate(_ url: String) throws {
        try command("POST", "url", ["url": url])
    }

    public func refresh() throws {
        try command("POST", "refresh")
    }

    /// The element reference of the first match of `selector`; throws when none.
    public func find(_ selector: String) throws -> String {
        let value = try command("POST", "element", ["using": "css selector", "value": selector])
        guard let id = (value as? [String: Any])?[Self.elementKey] as? String else {
            throw WebDriverError(description: "find \(selector): no element reference in \(String(describing: value))")
        }
        return id
    }

    public func click(_ selector: String) throws {
        try onElement(selector) { try command("POST", "element/\($0)/click") }
    }

    /// Types `text` into the element (for a file input: a path to upload).
    public func sendKeys(_ selector: String, _ text: String) throws {
        try onElement(selector) { try command("POST", "element/\($0)/value", ["text": text]) }
    }

    /// Finds `selector` and runs `action` on it, finding it again when the
    /// page replaced the element in between (the room list re-renders on
    /// every event): a stale reference means the action did not happen.
    /// Bounded: 5 tries.
    private func onElement(_ selector: String, _ action: (String) throws -> Void) throws {
        for attempt in 1...5 {
            do {
                return try action(try find(selector))
            } catch let error as WebDriverError where attempt < 5 && error.description.contains("stale element reference") {
                usleep(50_000)
            }
        }
    }

    /// Runs `script` (a function body; `arguments[0]`... are `args`) in the page; its return value.
    @discardableResult
    public func execute(_ script: String, _ args: [Any] = []) throws -> Any? {
        try command("POST", "execute/sync", ["script": script, "args": args])
    }

    /// Runs `script` in the page until it returns a truthy value, polling
    /// every 50 ms; throws after `timeout` with `what`, the last value and the page's console.
    @discardableResult
    public func waitUntil(timeout: Double = 30, _ what: String, script: String, _ args: [Any] = []) throws -> Any? {
        let deadline = Date().addingTimeInterval(timeout)
        var last: Any?
        repeat {
            last = try execute(script, args)
            if Self.truthy(last) { return last }
            usleep(50_000)
        } while Date() < deadline
        throw WebDriverError(
            description: "timed out after \(timeout) s waiting for \(what) (last: \(String(describing: last)))\n--- console ---\n"
                + ((try? consoleLog()) ?? "(unreadable)")
        )
    }

    /// JavaScript truthiness of a value as it comes back from `execute`.
    static func truthy(_ value: Any?) -> Bool {
        switch value {
        case nil, is NSNull: false
        case let bool as Bool: bool
        case let number as NSNumber: number.doubleValue != 0
        case let string as String: !string.isEmpty
        default: true
        }
    }

    /// A screenshot of the viewport as PNG bytes.
    public func screenshot() throws -> Data {
        guard let base64 = try command("GET", "screenshot") as? String, let png = Data(base64Encoded: base64) else {
            throw WebDriverError(description: "screenshot: no base64 PNG")
        }
        return png
    }

    /// The page's console messages since the last call (chromedriver's
    /// `goog:loggingPrefs` log), one a line; throws when it cannot be read
    /// (an empty log must mean a quiet console).
    public func consoleLog() throws -> String {
        let value = try command("POST", "se/log", ["type": "browser"])
        guard let entries = value as? [[String: Any]] else {
            throw WebDriverError(description: "console log: not a list of entries: \(String(describing: value))")
        }
        return entries.map { "\($0["level"] ?? "") \($0["message"] ?? "")" }.joined(separator: "\n")
    }

    /// Ends the session (Chromium exits) and removes the profile; safe to
    /// call twice. `ask: false` (chromedriver does not answer): its
    /// processes are killed without asking.
    public func quit(ask: Bool = true) {
        let first = lock.withLock {
            defer { quitted = true }
            return !quitted
        }
        guard first else { return }
        do {
            guard ask else { throw WebDriverError(description: "chromedriver does not answer") }
            _ = try WebDriverHTTP.call("DELETE", base, nil, timeout: 20)
        } catch {
            killProcesses()
        }
        try? FileManager.default.removeItem(atPath: profile)
    }

    /// SIGKILLs every process of this browser: those whose command line
    /// holds its `--user-data-dir` (a unique temporary directory).
    func killProcesses() {
        let argument = Array("--user-data-dir=\(profile)".utf8)
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for pid in entries.compactMap(Int32.init) where pid != getpid() {
            guard let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { continue }
            // The argument whole: followed by the next one (NUL, or a space
            // where Chromium rewrote its title) or the end.
            let bytes = [UInt8](cmdline)
            var from = bytes.startIndex
            while let found = bytes[from...].firstRange(of: argument) {
                if found.upperBound == bytes.endIndex || bytes[found.upperBound] == 0 || bytes[found.upperBound] == 32 {
                    kill(pid, SIGKILL)
                    break
                }
                from = found.upperBound
            }
        }
    }
}

/// What chromedriver answered with an error (`value.error`, `value.message`), or a failed exchange.
public struct WebDriverError: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) {
        self.description = description
    }
}

/// Blocking JSON-over-HTTP calls to chromedriver, one connection each, the
/// answer read to its `Content-Length` (chromedriver keeps the connection
/// open even after `Connection: close`). Not URLSession: chromedriver writes
/// header fields with no space after the colon (`Content-Length:741`), and
/// FoundationNetworking's parser refuses them ("Failed writing header").
enum WebDriverHTTP {
    /// `method url` with `body` as JSON; the response's `value`, or a
    /// `WebDriverError` with the protocol's error and message.
    static func call(_ method: String, _ url: URL, _ body: Any?, timeout: Double) throws -> Any? {
        let payload = try body.map { try JSONSerialization.data(withJSONObject: $0) } ?? Data()
        var head = "\(method) \(url.path) HTTP/1.1\r\nHost: 127.0.0.1:\(url.port ?? 80)\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json\r\n" }
        head += "Content-Length: \(payload.count)\r\n\r\n"
        let response = try exchange(port: url.port ?? 80, Array(head.utf8) + payload, timeout: timeout, what: "\(method) \(url.path)")
        guard let split = response.firstRange(of: [13, 10, 13, 10]) else {
            throw WebDriverError(description: "\(method) \(url.path): no response head in \(response.count) bytes")
        }
        let statusLine = String(decoding: response[..<split.lowerBound], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        let content = Data(response[split.upperBound...])
        let json = try? JSONSerialization.jsonObject(with: content, options: .fragmentsAllowed)
        let value = (json as? [String: Any])?["value"]
        if status == 200 && value == nil {
            // Not a success: a nil here would read as a false condition or an empty log.
            throw WebDriverError(description: "\(method) \(url.path): HTTP 200 without a JSON `value`: \(String(decoding: content, as: UTF8.self).prefix(500))")
        }
        if status != 200 {
            let detail = value as? [String: Any]
            let error = detail?["error"] as? String ?? "HTTP \(status)"
            let message = detail?["message"] as? String ?? String(decoding: content, as: UTF8.self)
            throw WebDriverError(description: "\(method) \(url.path): \(error): \(message)")
        }
        return value is NSNull ? nil : value
    }

    /// Sends `request` to 127.0.0.1:`port` and reads the answer: its head and
    /// `Content-Length` bytes, or up to the close when it has no length.
    static func exchange(port: Int, _ request: [UInt8], timeout: Double, what: String) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw WebDriverError(description: "\(what): socket: \(errno)") }
        defer { close(fd) }
        var address = TestServer.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw WebDriverError(description: "\(what): connect: \(errno)") }
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw WebDriverError(description: "\(what): send: \(errno)") }
            sent += n
        }
        let deadline = Date().addingTimeInterval(timeout)
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw WebDriverError(description: "\(what): no complete answer within \(timeout) s") }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, left * 1000)))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                // The close: the whole answer only when it has no length (or all of it).
                if let length = bodyLength(response), let split = response.firstRange(of: [13, 10, 13, 10]),
                    response.count - split.upperBound < length {
                    throw WebDriverError(description: "\(what): closed after \(response.count - split.upperBound) of \(length) body bytes")
                }
                return response
            }
            response += buffer[..<n]
            if let length = bodyLength(response), let split = response.firstRange(of: [13, 10, 13, 10]), response.count - split.upperBound >= length {
                return response
            }
        }
    }

    /// The `Content-Length` of a response whose head has arrived.
    static func bodyLength(_ response: [UInt8]) -> Int? {
        guard let split = response.firstRange(of: [13, 10, 13, 10]) else { return nil }
        let head = String(decoding: response[..<split.lowerBound], as: UTF8.self)
        for line in head.split(separator: "\r\n").dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length" { return Int(parts[1].trimmingCharacters(in: .whitespaces)) }
        }
        return nil
    }
}
