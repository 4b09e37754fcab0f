import CZeroMQ
import Foundation

/// A ZAP handler (ZeroMQ Authentication Protocol, RFC 27): libzmq asks it,
/// over a REP socket at `inproc://zeromq.zap.01` in the sockets' context,
/// whether each client that completed a CURVE handshake with a server socket
/// may stay. Without a handler bound there, a CURVE server accepts any
/// client that knows its public key; so this binds in `init`, before the
/// caller binds its server sockets, and answers on a thread of its own.
public final class ZAPHandler: @unchecked Sendable {
    /// What libzmq tells the handler of one client.
    public struct Request: Sendable, Equatable {
        /// The server socket's `ZMQ_ZAP_DOMAIN`.
        public var domain: String
        /// The client's IP address (no port).
        public var address: String
        /// `CURVE`, `PLAIN` or `NULL`.
        public var mechanism: String
        /// CURVE: the client's long-term public key, Z85.
        public var publicKey: String?

        public init(domain: String, address: String, mechanism: String, publicKey: String?) {
            self.domain = domain
            self.address = address
            self.mechanism = mechanism
            self.publicKey = publicKey
        }
    }

    public static let endpoint = "inproc://zeromq.zap.01"

    private let socket: Socket
    private let wakeup: Wakeup
    private let allow: @Sendable (Request) -> Bool
    private let lock = NSLock()
    private var stopRequested = false
    private let finished = DispatchSemaphore(value: 0)

    /// Binds the handler's socket; `start` answers. `allow` runs on the
    /// handler's thread, one request at a time.
    public init(context: Context, allow: @escaping @Sendable (Request) -> Bool) throws {
        socket = try Socket(context: context, type: .rep)
        try socket.bind(Self.endpoint)
        wakeup = try Wakeup()
        self.allow = allow
    }

    /// Answers on a thread of its own. `onFailure` runs on that thread if it
    /// stops answering for any reason but `stop`: with the handler gone every
    /// handshake fails (servers set `ZMQ_ZAP_ENFORCE_DOMAIN`), so the owner
    /// must not carry on as if the bus worked.
    public func start(onFailure: @escaping @Sendable (Error) -> Void = { _ in }) {
        let thread = Thread { [self] in
            defer { socket.close(); finished.signal() }
            do {
                try serve()
            } catch {
                onFailure(error)
            }
        }
        thread.name = "chatd-zap"
        thread.start()
    }

    /// Stops answering and closes the socket (so the context can terminate);
    /// returns once the thread has.
    public func stop() {
        lock.withLock { stopRequested = true }
        wakeup.signal()
        finished.wait()
        finished.signal()  // a second stop returns at once
    }

    private func serve() throws {
        var poller = Poller()
        poller.add(.socket(socket))
        poller.add(.fd(wakeup.fd))
        while !lock.withLock({ stopRequested }) {
            let ready = try poller.poll(timeoutMilliseconds: 1000)
            if ready[1] & pollIn != 0 { wakeup.drain() }
            guard ready[0] & pollIn != 0 else { continue }
            while let frames = try socket.receive(dontWait: true) {
                try socket.send(Self.reply(to: frames, allow: allow))
            }
        }
    }

    /// The answer to one request (RFC 27): version, request id, status code
    /// and text, user id, metadata. A request that is not version 1.0 is
    /// refused with 400 rather than left unanswered (libzmq would wait).
    public static func reply(to frames: [[UInt8]], allow: (Request) -> Bool) -> [[UInt8]] {
        let requestID = frames.count > 1 ? frames[1] : []
        func answer(_ code: String, _ text: String) -> [[UInt8]] {
            [Array("1.0".utf8), requestID, Array(code.utf8), Array(text.utf8), [], []]
        }
        guard frames.count >= 6, frames[0] == Array("1.0".utf8) else { return answer("400", "malformed request") }
        let text = { (i: Int) in String(decoding: frames[i], as: UTF8.self) }
        let request = Request(
            domain: text(2), address: text(3), mechanism: text(5),
            publicKey: text(5) == "CURVE" && frames.count > 6 ? Curve.z85(frames[6]) : nil)
        return allow(request) ? answer("200", "OK") : answer("400", "key not allowed")
    }
}
