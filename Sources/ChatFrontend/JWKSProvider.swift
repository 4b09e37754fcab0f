import Foundation
import Logging
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// When to fetch a JWKS URL again: a pure state machine, time (monotonic
/// seconds) in, a decision out.
///
/// - A token whose `kid` is unknown may fetch, at most once per
///   `minInterval`: a client inventing kids cannot make chatd hammer the
///   identity provider. Tokens arriving while a fetch is under way wait for it.
/// - A document older than `maxAge` is fetched again in the background on the
///   next token, so a key the provider withdrew stops verifying.
/// - A failed fetch keeps the keys already known (served stale).
struct JWKSRefreshPolicy: Equatable {
    let minInterval: Double
    let maxAge: Double
    private(set) var lastAttempt: Double?
    private(set) var lastSuccess: Double?
    private(set) var fetching = false

    /// Until a first document arrived, a provider that was down at start is
    /// retried this often at most (or `minInterval` when that is shorter).
    static let bootstrapInterval = 5.0

    init(minInterval: Double, maxAge: Double) {
        self.minInterval = max(0, minInterval)
        self.maxAge = max(self.minInterval, maxAge)
    }

    enum Decision: Equatable {
        /// Start a fetch (the policy now counts it as under way).
        case fetch
        /// A fetch is under way: wait for it.
        case join
        /// Too soon: use the keys there are.
        case none
    }

    private func due(_ now: Double) -> Bool {
        guard let lastAttempt else { return true }
        let interval = lastSuccess == nil ? min(minInterval, Self.bootstrapInterval) : minInterval
        return now - lastAttempt >= interval
    }

    /// A token names a kid no known key has.
    mutating func unknownKid(now: Double) -> Decision {
        if fetching { return .join }
        guard due(now) else { return .none }
        fetching = true
        lastAttempt = now
        return .fetch
    }

    /// Any token: is the document old enough for a background refresh?
    mutating func routine(now: Double) -> Decision {
        guard !fetching, let lastSuccess, now - lastSuccess >= maxAge, due(now) else { return .none }
        fetching = true
        lastAttempt = now
        return .fetch
    }

    mutating func finished(now: Double, success: Bool) {
        fetching = false
        if success { lastSuccess = now }
    }
}

/// The JWKS document chatd verifies RS256/ES256 tokens against, from a file
/// or an http(s) URL (`auth.jwks`), cached in memory. Reading the cached keys
/// takes a lock, never a fetch; fetches happen on an unknown `kid` or when
/// the document is old (see `JWKSRefreshPolicy`). A file is re-read whenever
/// its modification time, size or inode changed (checked at most once a
/// second, and on every unknown `kid`).
public final class JWKSProvider: Sendable {
    public enum Source: Sendable, Equatable, CustomStringConvertible {
        case file(String)
        case url(URL)

        /// `http://` and `https://` are URLs; `file://` and anything else a path.
        public init(_ location: String) {
            let lower = location.lowercased()
            if lower.hasPrefix("http://") || lower.hasPrefix("https://"), let url = URL(string: location) {
                self = .url(url)
            } else if lower.hasPrefix("file://"), let url = URL(string: location) {
                self = .file(url.path)
            } else {
                self = .file(location)
            }
        }

        public var description: String {
            switch self {
            case .file(let path): path
            case .url(let url): url.absoluteString
            }
        }
    }

    public let source: Source
    /// Where the last document fetched from a URL is kept, so a frontend
    /// restarted while the provider is down still knows the keys.
    let cachePath: String?
    let logger: Logger
    /// Per fetch of a URL, connection and transfer together.
    let fetchTimeout: Double

    private struct FileStamp: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var seconds: Int
        var nanoseconds: Int
    }

    private struct State {
        var keys: [VerificationKey] = []
        var policy: JWKSRefreshPolicy
        var fileStamp: FileStamp?
        var lastFileCheck = -Double.infinity
        /// The file's last problem, logged once rather than on every check.
        var fileProblem: String?
        var inFlight: Task<Void, Never>?
    }

    private let state: Mutex<State>

    /// - Parameters:
    ///   - minRefreshInterval: least seconds between two fetches of a URL on unknown kids.
    ///   - maxAge: a URL's document older than this is refreshed in the background.
    ///   - cachePath: a file for the last good document of a URL; nil: memory only.
    public init(
        source: Source, minRefreshInterval: Double = 60, maxAge: Double = 600, fetchTimeout: Double = 5, cachePath: String? = nil,
        logger: Logger
    ) {
        self.source = source
        self.cachePath = cachePath
        self.logger = logger
        self.fetchTimeout = fetchTimeout
        state = Mutex(State(policy: JWKSRefreshPolicy(minInterval: minRefreshInterval, maxAge: maxAge)))
    }

    static func now() -> Double { ProcessInfo.processInfo.systemUptime }

    /// Loads the document at startup: a file now; a URL in the background,
    /// so a slow provider does not hold up the frontend's start (tokens that
    /// arrive meanwhile wait for that fetch). A failure is logged, not fatal:
    /// HS256 (if configured) works, and tokens retry the provider.
    public func load() async {
        switch source {
        case .file: await reloadFileIfChanged(force: true)
        case .url:
            // The last good document first, if this host kept one: stale
            // keys verify until the fetch below replaces them.
            if let cachePath, let data = try? Data(contentsOf: URL(fileURLWithPath: cachePath)),
                let cached = try? await JWKSDocument.keys(from: data) {
                install(cached.keys, skipped: cached.skipped, from: "cache \(cachePath)")
            }
            _ = fetchTask { $0.unknownKid(now: Self.now()) }
        }
    }

    /// The keys to verify a token with now (after a due file check or a
    /// background refresh of an old document).
    func currentKeys() async -> [VerificationKey] {
        let now = Self.now()
        switch source {
        case .file:
            let due = state.withLock { state in
                guard now - state.lastFileCheck >= 1 else { return false }
                state.lastFileCheck = now
                return true
            }
            if due { await reloadFileIfChanged() }
        case .url:
            // In the background: this token verifies with the keys there are.
            _ = fetchTask { $0.routine(now: now) }
        }
        return state.withLock { $0.keys }
    }

    /// After a token named an unknown kid: the keys after one refresh, when
    /// the policy allows one (or one is under way), else the keys there are.
    func keysAfterUnknownKid() async -> [VerificationKey] {
        switch source {
        case .file:
            await reloadFileIfChanged()
        case .url:
            let now = Self.now()
            await fetchTask { $0.unknownKid(now: now) }?.value
        }
        return state.withLock { $0.keys }
    }

    /// The fetch to wait for, if the policy starts one or one is under way;
    /// decided and recorded under one lock so a joiner always finds the task.
    private func fetchTask(_ decide: (inout JWKSRefreshPolicy) -> JWKSRefreshPolicy.Decision) -> Task<Void, Never>? {
        state.withLock { state in
            switch decide(&state.policy) {
            case .fetch:
                let task = Task { await self.fetch() }
                state.inFlight = task
                return task
            case .join: return state.inFlight
            case .none: return nil
            }
        }
    }

    /// One fetch of the URL; on success the document replaces the keys.
    private func fetch() async {
        guard case .url(let url) = source else { return }
        var success = false
        do {
            let data = try await BoundedFetch.get(url, timeout: fetchTimeout, limit: JWKSDocument.maxBytes)
            let (keys, skipped) = try await JWKSDocument.keys(from: data)
            install(keys, skipped: skipped, from: "\(url.absoluteString)")
            success = true
            keep(data)
        } catch {
            let known = state.withLock { $0.keys.count }
            logger.warning("JWKS fetch failed; keeping the keys already known", metadata: [
                "jwks": "\(url.absoluteString)", "error": "\(error)", "keys": "\(known)",
            ])
        }
        let now = Self.now()
        state.withLock { state in
            state.policy.finished(now: now, success: success)
            state.inFlight = nil
        }
    }

    private func reloadFileIfChanged(force: Bool = false) async {
        guard case .file(let path) = source else { return }
        var info = stat()
        guard stat(path, &info) == 0 else {
            fileProblem("unreadable: \(String(cString: strerror(errno)))")
            return
        }
        let stamp = FileStamp(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
            seconds: Int(info.st_mtim.tv_sec), nanoseconds: Int(info.st_mtim.tv_nsec)
        )
        let changed = state.withLock { force || $0.fileStamp != stamp }
        guard changed else { return }
        do {
            guard info.st_size <= JWKSDocument.maxBytes else { throw JWKSDocument.Invalid(description: "file over \(JWKSDocument.maxBytes) bytes") }
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let parsed = try await JWKSDocument.keys(from: data)
            state.withLock { state in
                state.fileStamp = stamp
                state.fileProblem = nil
            }
            install(parsed.keys, skipped: parsed.skipped, from: path)
        } catch {
            // Not read again until its stamp changes: a file caught half-written
            // changes once more when the writer finishes.
            state.withLock { $0.fileStamp = stamp }
            fileProblem("invalid: \(error)")
        }
    }

    private func fileProblem(_ problem: String) {
        let new = state.withLock { state in
            defer { state.fileProblem = problem }
            return state.fileProblem != problem
        }
        if new {
            logger.warning("JWKS file \(problem); keeping the keys already known", metadata: ["jwks": "\(source)"])
        }
    }

    /// Writes the document to `cachePath` (0600, by rename: never half a file).
    private func keep(_ data: Data) {
        guard let cachePath else { return }
        let temporary = cachePath + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        if written != data.count || rename(temporary, cachePath) != 0 {
            unlink(temporary)
            logger.warning("JWKS cache not written", metadata: ["path": "\(cachePath)"])
        }
    }

    private func install(_ keys: [VerificationKey], skipped: [String], from origin: String) {
        let before = state.withLock { state in
            defer { state.keys = keys }
            return state.keys.map { "\($0.kid ?? "-")" }
        }
        let after = keys.map { "\($0.kid ?? "-")" }
        if before != after {
            logger.info("JWKS loaded", metadata: [
                "jwks": "\(origin)", "kids": "\(after.joined(separator: ","))",
                "skipped": "\(skipped.joined(separator: "; "))",
            ])
        }
    }
}

/// A GET with a deadline and a size bound: the document is cut off (and the
/// fetch failed) as soon as it passes `limit`, not after it was all buffered.
final class BoundedFetch: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let limit: Int
    // Delegate callbacks arrive on the session's serial delegate queue; the
    // lock only guards the hand-over to the awaiting caller.
    private let lock = NSLock()
    private var received = Data()
    private var failure: Failure?
    private var continuation: CheckedContinuation<Data, any Error>?

    private init(limit: Int) {
        self.limit = limit
    }

    static func get(_ url: URL, timeout: Double, limit: Int) async throws -> Data {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        configuration.timeoutIntervalForResource = timeout
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        let fetch = BoundedFetch(limit: limit)
        let session = URLSession(configuration: configuration, delegate: fetch, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        return try await withCheckedThrowingContinuation { continuation in
            fetch.lock.withLock { fetch.continuation = continuation }
            session.dataTask(with: request).resume()
        }
    }

    private func fail(_ task: URLSessionTask, _ description: String) {
        lock.withLock { failure = failure ?? Failure(description: description) }
        task.cancel()
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void
    ) {
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        if status != 200 {
            fail(dataTask, "HTTP \(status)")
            completionHandler(.cancel)
        } else if response.expectedContentLength > Int64(limit) {
            fail(dataTask, "document over \(limit) bytes")
            completionHandler(.cancel)
        } else {
            completionHandler(.allow)
        }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let over = lock.withLock {
            received.append(data)
            return received.count > limit
        }
        if over { fail(dataTask, "document over \(limit) bytes") }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let (continuation, result): (CheckedContinuation<Data, any Error>?, Result<Data, any Error>) = lock.withLock {
            defer { self.continuation = nil }
            if let failure { return (self.continuation, .failure(failure)) }
            if let error { return (self.continuation, .failure(error)) }
            return (self.continuation, .success(received))
        }
        continuation?.resume(with: result)
    }
}
