import ChatCore
import NIOCore
import NIOHTTP1

/// The limits the edge enforces on every HTTP connection (api-contract.md
/// "Limits"; RFC 9112).
struct HTTPEdgeLimits: Sendable {
    /// Longest request target (`414` past it).
    var maxURLBytes = 8 << 10
    /// The request head must arrive within this time of its first byte (slowloris).
    var headTimeout = TimeAmount.seconds(10)
    /// A request body must keep moving: at most this long between two of its pieces.
    var bodyTimeout = TimeAmount.seconds(30)
    /// A keep-alive connection with no request this long is closed.
    var keepAliveTimeout = TimeAmount.seconds(75)
}

/// The HTTP edge of one connection: everything the parser refuses is answered
/// with a status, a JSON body and `Connection: close`, and closed; every wait
/// for the client is bounded. Two handlers share it: `raw` sits first in the
/// pipeline (it sees bytes and writes the refusals as bytes, so a refusal
/// never depends on the encoder's state) and `requests` sits after the
/// decoder (it sees heads, parser errors and the end of each response).
///
/// Both are removed when the connection becomes a WebSocket; from then on
/// RFC 6455 rules (`WebSocketFrameGuard`) and the idle timeout apply.
final class HTTPEdge {
    enum Phase {
        /// Waiting for a request head (the first, or the next on a keep-alive connection).
        case head
        /// A head was accepted; its body is arriving.
        case body
        /// The request is complete; the server is answering it.
        case responding
        /// Refused or timed out; nothing more is read.
        case closed
    }

    let limits: HTTPEdgeLimits
    private(set) var phase = Phase.head
    /// Bytes of the current request head seen so far; 0 while idle.
    private var headBytes = 0
    /// Whether the request line of the current head has ended (an LF was seen).
    private var requestLineDone = false
    /// The reads of the current head (bounded), to tell a refused
    /// `Transfer-Encoding` from other parser errors: llhttp reports both as
    /// the same error. Kept as the reads themselves, not copied: a head
    /// usually comes in one read, dropped once the head is parsed.
    private var capture: [ByteBuffer] = []
    private var rawContext: ChannelHandlerContext?
    /// When the current wait ends, and the timer that checks it.
    private var deadline: NIODeadline
    private var timer: Scheduled<Void>?
    private var timerFires = NIODeadline.distantFuture

    /// Capture no more than this of a head: enough to classify any head the decoder accepts in size.
    private static let captureLimit = 96 << 10

    lazy var raw = RawHandler(edge: self)
    lazy var requests = RequestHandler(edge: self)

    init(limits: HTTPEdgeLimits) {
        self.limits = limits
        self.deadline = .now() + limits.headTimeout
    }

    /// Adds the two handlers around the HTTP codec `configureUpgradableHTTPServerPipeline` set up.
    func install(in pipeline: ChannelPipeline.SynchronousOperations) throws {
        try pipeline.addHandler(raw, position: .first)
        let decoder = try pipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
        try pipeline.addHandler(requests, position: .after(decoder.handler))
    }

    /// Takes both handlers out: the connection is a WebSocket now.
    func remove(from pipeline: ChannelPipeline.SynchronousOperations) {
        cancelTimer()
        pipeline.removeHandler(requests, promise: nil)
        pipeline.removeHandler(raw, promise: nil)
    }

    // MARK: Time

    private func wait(until deadline: NIODeadline) {
        self.deadline = deadline
        // The timer re-arms itself when it fires early; only an earlier deadline needs a new one.
        if timer == nil || deadline < timerFires { arm(at: deadline) }
    }

    private func arm(at when: NIODeadline) {
        guard let context = rawContext else { return }
        timer?.cancel()
        timerFires = when
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) { [self] in
            timer = nil
            timerFires = .distantFuture
            expired()
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        timerFires = .distantFuture
        deadline = .distantFuture
    }

    private func expired() {
        guard phase != .closed else { return }
        guard NIODeadline.now() >= deadline else { return arm(at: deadline) }
        switch phase {
        case .head where headBytes == 0:
            // An idle keep-alive connection (or one that never sent a byte).
            phase = .closed
            rawContext?.close(promise: nil)
        case .head:
            refuse(.requestTimeout, "The request head did not arrive in time.")
        case .body where responsesEnded > requestsEnded:
            // Already answered (before its body was read): nothing more to say.
            phase = .closed
            rawContext?.close(promise: nil)
        case .body:
            refuse(.requestTimeout, "The request body stopped arriving.")
        case .responding, .closed:
            break
        }
    }

    // MARK: Events from the handlers

    fileprivate func activated(_ context: ChannelHandlerContext) {
        rawContext = context
        arm(at: deadline)
    }

    fileprivate func received(_ buffer: ByteBuffer) {
        guard phase == .head, buffer.readableBytes > 0 else { return }
        if headBytes == 0 { wait(until: min(deadline, .now() + limits.headTimeout)) }
        headBytes += buffer.readableBytes
        if !requestLineDone {
            if buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) != nil {
                requestLineDone = true
            } else if headBytes > limits.maxURLBytes + 32 {
                // Method, spaces and version are far shorter than 32 bytes.
                return refuse(.uriTooLong, "The request target is longer than \(limits.maxURLBytes) bytes.")
            }
        }
        if headBytes - buffer.readableBytes < Self.captureLimit { capture.append(buffer) }
    }

    /// A head the decoder accepted: checked against what chatd serves, or refused.
    fileprivate func accept(_ head: HTTPRequestHead) -> Bool {
        capture.removeAll(keepingCapacity: true)
        guard head.version.major == 1, head.version.minor <= 1 else {
            refuse(.httpVersionNotSupported, "HTTP/\(head.version.major).\(head.version.minor) is not supported.")
            return false
        }
        guard Self.isServed(head.method) else {
            refuse(.notImplemented, "Method \"\(head.method.rawValue.prefix(32))\" is not implemented.")
            return false
        }
        guard head.uri.utf8.count <= limits.maxURLBytes else {
            refuse(.uriTooLong, "The request target is longer than \(limits.maxURLBytes) bytes.")
            return false
        }
        // RFC 9112 3.2: exactly one Host in HTTP/1.1.
        let hosts = head.headers[canonicalForm: "host"]
        guard hosts.count == 1 || (head.version.minor == 0 && hosts.isEmpty) else {
            refuse(.badRequest, "A request must carry exactly one Host header.")
            return false
        }
        // RFC 9112 6.1: chatd decodes only `chunked`, and only alone.
        let codings = head.headers[canonicalForm: "transfer-encoding"]
        if !codings.isEmpty {
            guard !head.headers.contains(name: "content-length") else {
                refuse(.badRequest, "Content-Length and Transfer-Encoding must not both be sent.")
                return false
            }
            guard codings.count == 1, codings[0].lowercased() == "chunked" else {
                refuse(.notImplemented, "Transfer-Encoding other than a single \"chunked\" is not implemented.")
                return false
            }
        }
        phase = .body
        readingBody = true
        headBytes = 0
        requestLineDone = false
        wait(until: .now() + limits.bodyTimeout)
        return true
    }

    fileprivate func bodyProgress() {
        // Moves the deadline later without touching the timer: it re-arms when it fires.
        deadline = .now() + limits.bodyTimeout
    }

    /// Requests read whole, and responses written whole, on this connection.
    /// A response may end before its request does (a `401` is sent before the
    /// body is drained) and a client may send the next request before the
    /// last response ends: the connection is idle only when the two agree.
    private var requestsEnded = 0
    private var responsesEnded = 0

    /// A request's head was accepted and its end has not come yet.
    private var readingBody = false

    fileprivate func requestEnded() {
        requestsEnded += 1
        readingBody = false
        settle()
    }

    fileprivate func responseEnded() {
        responsesEnded += 1
        settle()
    }

    /// After a request or a response ended: still answering, or idle (the keep-alive wait).
    private func settle() {
        guard phase == .body || phase == .responding else { return }
        // A body still arriving keeps its own timer, whatever was answered.
        if readingBody { return }
        if responsesEnded >= requestsEnded {
            phase = .head
            wait(until: .now() + limits.keepAliveTimeout)
        } else {
            phase = .responding
            deadline = .distantFuture
        }
    }

    fileprivate func parserFailed(_ error: HTTPParserError) {
        let text = capture.map { String(buffer: $0) }.joined().lowercased()
        switch error {
        case .headerOverflow:
            refuse(.requestHeaderFieldsTooLarge, "The request headers are too large or too many.")
        case .invalidMethod:
            refuse(.notImplemented, "The request method is not implemented.")
        case .invalidVersion:
            refuse(.httpVersionNotSupported, "The HTTP version is not supported.")
        case .unknown where text.contains("\ntransfer-encoding:") && text.contains("\ncontent-length:"):
            // RFC 9112 6.1: both at once is how requests are smuggled.
            refuse(.badRequest, "Content-Length and Transfer-Encoding must not both be sent.")
        case .unknown where text.contains("\ntransfer-encoding:"):
            refuse(.notImplemented, "Transfer-Encoding other than a single \"chunked\" is not implemented.")
        case .invalidContentLength, .unexpectedContentLength:
            refuse(.badRequest, "Content-Length must be one non-negative decimal number, without Transfer-Encoding.")
        case .invalidHeaderToken:
            refuse(.badRequest, "A header field is malformed.")
        case .invalidChunkSize:
            refuse(.badRequest, "A chunk size is malformed.")
        default:
            refuse(.badRequest, "The request is malformed.")
        }
    }

    /// Answers with `status` and closes. During a response nothing can be
    /// answered any more: the connection is only closed.
    func refuse(_ status: HTTPResponseStatus, _ detail: String) {
        guard phase != .closed, let context = rawContext else { return }
        let responding = phase == .responding
        phase = .closed
        cancelTimer()
        capture = []
        guard !responding else { return context.close(promise: nil) }
        let body = ClientJSON.detail(detail)
        var bytes = context.channel.allocator.buffer(capacity: 200 + body.count)
        bytes.writeString("HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n")
        bytes.writeString("Content-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n")
        bytes.writeString("Date: \(DateHeader.shared.current)\r\n\r\n")
        bytes.writeBytes(body)
        // Closed once written, or after a moment if a client that does not read keeps it from being written.
        let bound = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) { context.close(promise: nil) }
        context.writeAndFlush(NIOAny(bytes)).assumeIsolated().whenComplete { _ in
            bound.cancel()
            context.close(promise: nil)
        }
    }

    /// What chatd routes; anything else the parser knows is `501`.
    static func isServed(_ method: HTTPMethod) -> Bool {
        switch method {
        case .GET, .HEAD, .POST, .PUT, .PATCH, .DELETE, .OPTIONS: true
        default: false
        }
    }

    /// First in the pipeline: bytes in, refusals out.
    final class RawHandler: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        // A cycle (edge → handler → edge) that `remove` or the channel's end breaks.
        private var edge: HTTPEdge?

        init(edge: HTTPEdge) { self.edge = edge }

        func handlerAdded(context: ChannelHandlerContext) {
            if context.channel.isActive { edge?.activated(context) }
        }

        func channelActive(context: ChannelHandlerContext) {
            edge?.activated(context)
            context.fireChannelActive()
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            edge?.cancelTimer()
            edge?.rawContext = nil
            edge = nil
        }

        func channelInactive(context: ChannelHandlerContext) {
            edge?.cancelTimer()
            edge?.phase = .closed
            context.fireChannelInactive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let edge else { return context.fireChannelRead(data) }
            guard edge.phase != .closed else { return }
            edge.received(unwrapInboundIn(data))
            guard edge.phase != .closed else { return }
            context.fireChannelRead(data)
        }
    }

    /// After the decoder: heads, parser errors, and the end of each response.
    final class RequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        typealias OutboundIn = HTTPServerResponsePart
        typealias OutboundOut = HTTPServerResponsePart
        private var edge: HTTPEdge?

        init(edge: HTTPEdge) { self.edge = edge }

        func handlerRemoved(context: ChannelHandlerContext) {
            edge = nil
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let edge else { return context.fireChannelRead(data) }
            guard edge.phase != .closed else { return }
            switch unwrapInboundIn(data) {
            case .head(let head):
                guard edge.accept(head) else { return }
            case .body:
                edge.bodyProgress()
            case .end:
                edge.requestEnded()
            }
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .end = unwrapOutboundIn(data) { edge?.responseEnded() }
            context.write(data, promise: promise)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if let error = error as? HTTPParserError, let edge {
                edge.parserFailed(error)
            } else {
                context.fireErrorCaught(error)
            }
        }
    }
}
