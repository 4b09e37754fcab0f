import ChatBus
import ChatCore
import ChatWire
import Foundation
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// One client WebSocket, held entirely in this channel handler (no task per
/// connection): it parses client events, sends commands to the bus, and writes
/// room events the registry hands it. It holds one reference to its room's
/// events subscription (`BusClient.subscribe(room:)`, taken by the handshake)
/// and gives it back when it ends.
final class WebSocketConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let identity: Identity
    let identityJSON: [UInt8]
    let roomID: String
    let services: FrontendServices
    let session: Requests.Session
    /// Names this connection in `EventKey.except` (its own typing).
    let key: ConnectionRef
    private var context: ChannelHandlerContext?
    /// The frame encoder's context: bytes written through it go to the
    /// socket as they are. Room events arrive framed (`DeliveryPlan`); the
    /// encoder writes every other frame synchronously, so the order holds.
    private var wire: ChannelHandlerContext?
    private var registry: LoopRegistry?
    private var closing = false
    private var ended = false
    /// A ping went out after half the idle timeout; the next idle period closes.
    private(set) var pinged = false
    /// When the client last sent a frame (a handover carries the idle time on).
    private(set) var lastRead = NIODeadline.now()
    /// Bytes read and not parsed (HandoverGate).
    let hold: HandoverHold
    /// Commands sent and not answered: a handover waits for them (`HandoverSender`).
    let commands = CommandCount()
    /// Handover, old side: stopped at a frame boundary, its room left; when (monotonic ns).
    private(set) var stoppedForHandover = false
    private var stoppedAt: UInt64 = 0
    /// How many unread bytes its handover state took.
    private var unreadTaken = 0
    /// Handover, old side: its descriptor went to the new frontend; closing
    /// it here ends nothing for the client (no session close, no `user_left`).
    var handedOver = false
    /// Handover, old side: its state was taken and its send is under way
    /// (`takeForHandover` until `endHandover`): whether the session closes
    /// here is known only once the send went or failed.
    private var taken = false
    /// It ended while `taken`: `endHandover` closes the session unless it went.
    private var sessionClosePostponed = false
    /// Handover, new side: what the old process wrote, for the replay at `channelActive`.
    private var adoption: HandoverAdoption?
    /// Handover, new side: this socket was moved here.
    let adopted: Bool
    /// Handover, new side: the idle timer of a socket adopted and silent since (`continueIdleTime`).
    private var adoptedIdle: Scheduled<Void>?

    /// When the token the socket was opened with expires (plus the leeway): the socket closes then (4401).
    let expires: Date
    private var expiry: Scheduled<Void>?

    init(identity: Identity, identityJSON: [UInt8], session: Requests.Session, expires: Date, services: FrontendServices, hold: HandoverHold) {
        self.expires = expires
        self.identity = identity
        self.identityJSON = identityJSON
        self.roomID = session.roomID
        self.session = session
        self.services = services
        self.hold = hold
        self.key = ConnectionRef(frontend: services.bus.frontendID, number: services.connections.makeConnectionID())
        self.adopted = false
    }

    /// A socket a handover brought: it keeps the key its old process gave it
    /// (typing events name it), its session and its idle time.
    init(adopting adoption: HandoverAdoption, services: FrontendServices, hold: HandoverHold) {
        let state = adoption.state
        self.expires = adoption.expires
        self.identity = adoption.identity
        self.identityJSON = state.identityJSON
        self.roomID = state.roomID
        self.session = adoption.session
        self.services = services
        self.hold = hold
        self.key = ConnectionRef(frontend: state.frontendID, number: state.number)
        self.pinged = state.pinged
        self.lastRead = .now() - .milliseconds(Int64(state.idleMillis))
        self.adoption = adoption
        self.adopted = true
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        wire = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        assert(wire != nil, "the WebSocket upgrader installs the frame encoder before this handler")
        let registry = services.connections.registry(for: context.eventLoop)
        // An adopted socket joins its room once it can be written to (`channelActive`).
        if adoption == nil { registry.add(self, room: roomID) }
        self.registry = registry
        services.life.webSocketOpened()
        // A token's validity bounds the socket opened with it (api-contract.md "Messages").
        let left = Int64(max(0, min(expires.timeIntervalSinceNow, 400 * 86_400)) * 1_000)
        let loop = context.eventLoop
        let me = NIOLoopBound(self, eventLoop: loop)
        expiry = loop.scheduleTask(in: .milliseconds(left)) {
            let connection = me.value
            guard let context = connection.context else { return }
            connection.services.logger.info("closing WebSocket of an expired token", metadata: ["connection": "\(connection.key)"])
            connection.close(code: WebSocketErrorCode(codeNumber: 4401), context: context)
        }
        // The chat session record, and `user_joined` to the room; an adopted
        // socket's session stays open across the handover.
        if adoption == nil { command(.sessionOpen, bytes: session.commandBytes) }
        // Opened after the server's shutdown told the open sockets: told now,
        // once the upgrade has finished setting up the pipeline.
        if services.life.isStopping {
            loop.execute {
                let connection = me.value
                guard let context = connection.context else { return }
                connection.close(code: WebSocketErrorCode(codeNumber: connection.services.life.shutdownCloseCode), context: context)
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        expiry?.cancel()
        adoptedIdle?.cancel()
        end()
        self.context = nil
        wire = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        guard let adoption else { return }
        self.adoption = nil
        let replayed = registry?.adopt(self, written: adoption.state.written, truncated: adoption.state.logTruncated)
        // Reads resume when this returns: the pause ends here.
        let now = monotonicNanos()
        adoption.adopted(replayed, now > adoption.state.stoppedAt ? now - adoption.state.stoppedAt : 0)
        guard replayed != nil else {
            // Where it stopped cannot be told: it reconnects and resumes from the store.
            return close(code: WebSocketErrorCode(codeNumber: 1012), context: context)
        }
        // What the old process read and did not parse goes first, before the
        // first read here (NIO reads once the channel is active and this returns).
        continueIdleTime(context: context)
        if !adoption.state.unread.isEmpty {
            context.pipeline.syncOperations.fireChannelRead(NIOAny(context.channel.allocator.buffer(bytes: adoption.state.unread)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    /// The connection is gone (closed, reset, or dead without a close frame):
    /// leave the registry, close the session, tell the room `user_left`,
    /// give back its hold on the room's events subscription.
    private func end() {
        registry?.remove(self, room: roomID)
        registry = nil
        guard !ended else { return }
        ended = true
        services.life.webSocketClosed()
        services.limiter?.socketClosed(user: identity.id)
        services.bus.unsubscribe(room: roomID)
        // A socket handed over lives on in the new process, session and all;
        // one being sent may yet (its client reset it meanwhile, say): the
        // successor then closes the session itself, and this one must not too.
        if taken {
            sessionClosePostponed = true
        } else if !handedOver {
            command(.sessionClose, bytes: session.commandBytes)
        }
    }

    /// Sends a command whose answer this connection does not wait for.
    private func command(_ kind: CommandKind, _ body: some Encodable, onReply: (@Sendable (Result<Event, BusFailure>) -> Void)? = nil) {
        guard let bytes = try? JSONEncoder().encode(body) else { return }
        command(kind, bytes: [UInt8](bytes), onReply: onReply)
    }

    private func command(_ kind: CommandKind, bytes: [UInt8], onReply: (@Sendable (Result<Event, BusFailure>) -> Void)? = nil) {
        let destination = Destination.of(kind, shardKey: roomID)
        let replied = commands.sent()
        services.bus.send(kind, to: destination, user: identityJSON, body: bytes) { result in
            replied()
            onReply?(result)
        }
    }

    // MARK: Outbound (called by the registry on this loop)

    /// The user left the room, or it was deactivated: closed with 4403, and
    /// out of the room's delivery at once.
    func membershipEnded() {
        guard let context else { return }
        close(code: WebSocketErrorCode(codeNumber: 4403), context: context)
    }

    /// A room's steps of one batch (`DeliveryPlan`): its frames, already
    /// framed, written below the frame encoder, then one flush.
    func deliver(_ steps: [DeliveryPlan.Step]) {
        guard let wire else { return }
        var wrote = false
        for step in steps {
            guard !closing else { break }
            switch step {
            case .frames(let bytes, let excluded):
                guard excluded != key else { continue }  // its own typing
                wire.write(NIOAny(bytes), promise: nil)
                wrote = true
            case .hidden(let bytes, let users):
                guard !users.contains(identity.id) else { continue }  // its user blocked the sender
                wire.write(NIOAny(bytes), promise: nil)
                wrote = true
            case .onlyTo(let bytes, let user, let device):
                // A call signal for someone else, or another device's ciphertext.
                guard user == identity.id, device == nil || device == session.deviceID else { continue }
                wire.write(NIOAny(bytes), promise: nil)
                wrote = true
            case .notToAdopted(let bytes):
                guard !adopted else { continue }  // its old process wrote it this key's copy
                wire.write(NIOAny(bytes), promise: nil)
                wrote = true
            case .remove(let user):
                // Membership ended: those sockets get nothing more (api-contract.md "Messages").
                if user == nil || user == identity.id { membershipEnded() }
            }
        }
        if wrote { wire.flush() }
    }

    private func send(_ bytes: [UInt8]) {
        guard let context, !closing else { return }
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: bytes))), promise: nil)
    }

    private func sendError(_ text: String) {
        send(ClientJSON.errorEvent(text))
    }

    /// Sends a close frame and closes the connection once it is written, or
    /// after `closeGrace` if a client that does not read keeps it from being
    /// written: a close is never left waiting on the client.
    private func close(code: WebSocketErrorCode, context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        // Out of the room at once: nothing follows a close frame (RFC 6455 5.5.1).
        registry?.remove(self, room: roomID)
        Self.sendClose(code, context: context, frame: wrapOutboundOut)
    }

    /// How long a close frame may wait to be written before the TCP close.
    static let closeGrace = TimeAmount.seconds(2)

    static func sendClose(_ code: WebSocketErrorCode, context: ChannelHandlerContext, frame: (WebSocketFrame) -> NIOAny) {
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let bound = context.eventLoop.assumeIsolated().scheduleTask(in: closeGrace) { context.close(promise: nil) }
        context.writeAndFlush(frame(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))).assumeIsolated().whenComplete { _ in
            bound.cancel()
            context.close(promise: nil)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pinged = false
        lastRead = .now()
        // A frame: the idle handler's count (from here) is the right one again.
        adoptedIdle?.cancel()
        adoptedIdle = nil
        let frame = unwrapInboundIn(data)
        // Closing: only the client's answering close frame matters now.
        if closing && frame.opcode != .connectionClose { return }
        switch frame.opcode {
        case .text:
            let text = frame.unmaskedData
            // RFC 6455 8.1: a text message that is not UTF-8 fails the connection.
            guard String(validating: text.readableBytesView, as: UTF8.self) != nil else {
                return close(code: .dataInconsistentWithMessage, context: context)
            }
            handleText(text)
        case .binary:
            sendError("Only JSON text frames are accepted")
        case .ping:
            var payload = frame.unmaskedData
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: payload.readSlice(length: payload.readableBytes) ?? ByteBuffer())
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            break
        case .connectionClose:
            if closing {
                context.close(promise: nil)
            } else {
                // Echo the close (RFC 6455 5.5.1), then drop the connection.
                var payload = frame.unmaskedData
                let code = payload.readInteger(as: UInt16.self).map { WebSocketErrorCode(codeNumber: Int($0)) } ?? .normalClosure
                close(code: code, context: context)
            }
        default:
            close(code: .protocolError, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Server shutdown: tell the client we are going away (1001), or, when
        // the supervisor restarts this frontend, to come back at once (1012).
        // Stopped for a handover: its idle time travels with it; nothing is written here.
        if stoppedForHandover && event is IdleStateHandler.IdleStateEvent { return }
        if event is ChannelShouldQuiesceEvent {
            close(code: WebSocketErrorCode(codeNumber: services.life.shutdownCloseCode), context: context)
        } else if let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed {
            // The client went away without a close frame (half-closure is
            // allowed on the server's channels): nothing more will come.
            context.close(promise: nil)
        } else if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // Adopted and silent since: its own timer keeps the old process's time.
            guard adoptedIdle == nil else { return }
            idleStep(context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Half the idle timeout without a frame: ping; the other half: close (1001).
    private func idleStep(context: ChannelHandlerContext) {
        if pinged {
            services.logger.info("closing idle WebSocket", metadata: ["connection": "\(key)"])
            close(code: .goingAway, context: context)
        } else {
            pinged = true
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil)
        }
    }

    /// An adopted socket's idle time goes on from its old process's
    /// (`idleMillis`, `pinged`): the idle handler here counts from the
    /// adoption, so until the client's next frame this timer takes the
    /// ping and the close, each due half the idle timeout after the last
    /// frame (the ping) or after that (the close).
    private func continueIdleTime(context: ChannelHandlerContext) {
        let half = TimeAmount.milliseconds(Int64(services.config.chat.idleTimeoutSeconds * 500))
        let due = lastRead + (pinged ? half + half : half)
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        adoptedIdle = context.eventLoop.scheduleTask(deadline: due) {
            let connection = me.value
            guard connection.adoptedIdle != nil, !connection.stoppedForHandover, let context = connection.context else { return }
            connection.idleStep(context: context)
            if connection.pinged && !connection.closing { connection.continueIdleTime(context: context) }
        }
    }

    /// The client stopped reading and its outbound buffer reached the limit:
    /// buffering more would grow without bound, so it is cut off (1008).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable && !closing {
            services.logger.warning("closing WebSocket of a client that does not read", metadata: [
                "connection": "\(key)", "user.id": "\(identity.id)", "limit": "\(services.config.chat.maxOutboundBytes)",
            ])
            closing = true
            var data = context.channel.allocator.buffer(capacity: 2)
            data.write(webSocketErrorCode: .policyViolation)
            // The close frame may never get through a full buffer; the TCP close does.
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: nil)
            context.close(promise: nil)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let violation = error as? WebSocketFrameGuard.Violation {
            close(code: violation.code, context: context)
        } else if let error = error as? NIOWebSocketError {
            switch error {
            case .invalidFrameLength: close(code: .messageTooLarge, context: context)
            default: close(code: .protocolError, context: context)
            }
        } else if let error = error as? NIOWebSocketFrameAggregator.Error {
            // The fragments of one message passed the size limit: refused as
            // soon as they do, without buffering the rest (RFC 6455 7.4.1).
            switch error {
            case .accumulatedFrameSizeIsTooLarge, .tooManyFragments: close(code: .messageTooLarge, context: context)
            default: close(code: .protocolError, context: context)
            }
        } else {
            context.close(promise: nil)
        }
    }

    private func handleText(_ buffer: ByteBuffer) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) else {
            return sendError("Invalid JSON")
        }
        guard let event = object as? [String: Any] else { return sendError("Expected a JSON object") }
        let type = event["type"] as? String
        if let limiter = services.limiter, let wait = limiter.event(user: identity.id, typing: type == "typing").retryAfterSeconds {
            // A refused typing event is dropped quietly: it is the first to go when a user is busy.
            guard type != "typing" else { return }
            return send(ClientJSON.rateLimitedEvent(retryAfter: wait))
        }
        switch type {
        case "message":
            handleMessage(event)
        case "typing":
            guard let isTyping = event["is_typing"] as? Bool else { return sendError("is_typing must be true or false") }
            guard let loop = context?.eventLoop else { return }
            let me = NIOLoopBound(self, eventLoop: loop)
            command(.typingSet, Requests.TypingSet(roomID: roomID, isTyping: isTyping, connection: key.description)) { result in
                guard case .success(let reply) = result, reply.status != .ok else { return }
                loop.execute { me.value.sendError(Self.errorText(reply)) }
            }
        case "read_receipt":
            guard let raw = event["message_id"] as? String, let messageID = IDs.canonical(raw) else {
                return sendError("Message not found in this room")
            }
            guard let loop = context?.eventLoop else { return }
            let me = NIOLoopBound(self, eventLoop: loop)
            command(.receiptMessage, Requests.MessageRef(roomID: roomID, messageID: messageID)) { result in
                loop.execute {
                    switch result {
                    case .success(let reply) where reply.status == .ok: break
                    case .success(let reply) where reply.status == .notFound: me.value.sendError("Message not found in this room")
                    case .success(let reply): me.value.sendError(Self.errorText(reply))
                    case .failure: me.value.sendError("Read receipt could not be stored, try again")
                    }
                }
            }
        case "call_signal":
            handleCallSignal(event)
        case "ping":
            send(Array(#"{"type":"pong"}"#.utf8))
            command(.sessionPing, bytes: session.commandBytes)
        default:
            let type = event["type"].map { "\($0)" } ?? "None"
            sendError("Unknown message type: \(type)")
        }
    }

    private func handleMessage(_ event: [String: Any]) {
        let input: MessageInput
        switch MessageInput.parse(event, maxChars: services.config.maxMessageChars) {
        case .success(let parsed): input = parsed
        case .failure(let failure): return sendError(failure.errors.map { "\($0.field): \($0.message)" }.joined(separator: "; "))
        }
        let request = input.request(id: IDs.uuid7(), roomID: roomID)
        guard let body = try? request.commandBody() else { return sendError("Could not encode the message") }
        FrontendMetrics.messagesAccepted.increment()
        let loop = context!.eventLoop
        let me = NIOLoopBound(self, eventLoop: loop)
        // Enqueued synchronously, so this connection's messages reach the
        // shard in the order the client sent them.
        let replied = commands.sent()
        services.bus.send(.messageCreate, to: .store(key: roomID), user: identityJSON, body: body) { result in
            replied()
            loop.execute {
                let connection = me.value
                switch result {
                case .success(let reply) where reply.status == .created:
                    break  // everyone, this client included, gets the room event
                case .success(let reply) where reply.status == .ok:
                    // A repeated client_msg_id: the original goes to this client only.
                    connection.send(ClientJSON.messageEvent(reply.body))
                case .success(let reply):
                    connection.sendError(Self.errorText(reply))
                case .failure:
                    connection.sendError("Message could not be stored, try again")
                }
            }
        }
    }

    /// A call's signal for one other participant (api-contract.md "Calls"):
    /// checked by the room's shard, which sends it to that user's sockets in
    /// the room alone. The server never reads `signal`; it only bounds it.
    private func handleCallSignal(_ event: [String: Any]) {
        guard let raw = event["call_id"] as? String, let callID = IDs.canonical(raw) else { return sendError("call_id: Must be a valid UUID.") }
        guard let rawTo = event["to"] as? String, let to = IDs.canonical(rawTo) else { return sendError("to: Must be a valid UUID.") }
        guard let signal = event["signal"] as? [String: Any] else { return sendError("signal: Expected a JSON object.") }
        guard let json = try? JSONSerialization.data(withJSONObject: signal, options: .withoutEscapingSlashes), json.count <= Self.maxSignalBytes else {
            return sendError("signal: Ensure this field has no more than \(Self.maxSignalBytes) bytes.")
        }
        let request = Requests.CallSignal(roomID: roomID, callID: callID, to: to, signal: String(decoding: json, as: UTF8.self))
        guard let loop = context?.eventLoop else { return }
        let me = NIOLoopBound(self, eventLoop: loop)
        command(.callSignal, request) { result in
            loop.execute {
                switch result {
                case .success(let reply) where reply.status == .ok: break
                case .success(let reply): me.value.sendError(Self.errorText(reply))
                case .failure: me.value.sendError("Signal could not be sent, try again")
                }
            }
        }
    }

    /// api-contract.md "Calls": a signal (an SDP offer with its candidates) is at most 64 KiB.
    static let maxSignalBytes = 64 * 1024

    /// The text of an `error` event for a refused command: a detail (or a
    /// lone error) as it is, otherwise `key: message` per problem, by key, as DRF's body would list them.
    static func errorText(_ reply: Event) -> String {
        guard let error = try? reply.replyError() else { return "Request failed" }
        for case .detail(let detail) in error.problems { return detail }
        // The seed's lone `{"error": ...}` (a call's refusal) reads as it is, too.
        if error.problems.count == 1, case .error(let message) = error.problems[0] { return message }
        return error.problems.map { problem -> (String, String) in
            switch problem {
            case .detail(let message): ("detail", message)
            case .error(let message): ("error", message)
            case .field(let field, let message): (field, message)
            }
        }.sorted { $0.0 < $1.0 }.map { "\($0.0): \($0.1)" }.joined(separator: "; ")
    }

    // MARK: Handover (old side)

    /// How a stop for a handover went.
    enum HandoverStop {
        /// Stopped at a message boundary, out of its room, every frame written
        /// so far on the wire: the room's log up to now, commands unanswered.
        case stopped(written: [UInt64], truncated: Bool, pending: Int)
        /// Closing or closed already, or its writes would not drain: nothing to hand over.
        case gone
    }

    /// How long the frames already written may take to leave; a client that
    /// does not read this long is closed with 1012 instead of handed over
    /// (its unwritten bytes cannot travel with the descriptor).
    static let handoverFlushBound = TimeAmount.seconds(2)

    /// Stops reading (bytes still arriving stay in `hold`), leaves the room,
    /// and answers once everything written so far has left.
    func stopForHandover(_ done: @escaping (HandoverStop) -> Void) {
        guard let context, let registry, !closing, !stoppedForHandover else { return done(.gone) }
        stoppedForHandover = true
        stoppedAt = monotonicNanos()
        hold.paused = true
        try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        let (written, truncated) = registry.detachForHandover(self)
        flushed(context) { [self] ok in
            done(ok ? .stopped(written: written, truncated: truncated, pending: commands.pending) : .gone)
        }
    }

    /// Its two addresses: they name its descriptor (`HandoverDescriptors`).
    var addresses: (local: SocketAddress?, remote: SocketAddress?) {
        (context?.channel.localAddress, context?.channel.remoteAddress)
    }

    /// Once what its replies wrote since the stop has left too: its state,
    /// to send with its descriptor (nil: it is closing already, with 1012 if
    /// its writes did not leave). From then on nothing is written here (a
    /// reply still due is dropped) and nothing read (its reads stay paused),
    /// until `endHandover` closes it: the unread bytes taken are all there are.
    func takeForHandover(_ done: @escaping (HandoverConnection?) -> Void) {
        guard let context, !closing else { return done(nil) }
        flushed(context) { [self] ok in
            guard ok, self.context != nil, !closing else { return done(nil) }
            let idle = NIODeadline.now() - lastRead
            let state = HandoverConnection(
                frontendID: key.frontend, number: key.number, identityJSON: identityJSON,
                expiresMicros: Int64(expires.timeIntervalSince1970 * 1_000_000), roomID: roomID, sessionJSON: session.commandBytes,
                idleMillis: UInt32(clamping: idle.nanoseconds / 1_000_000), pinged: pinged,
                eventTokens: services.limiter?.eventTokens(user: identity.id), written: [], logTruncated: false,
                unread: Array(hold.pending.readableBytesView), stoppedAt: stoppedAt
            )
            closing = true
            taken = true
            unreadTaken = hold.pending.readableBytes
            done(state)
        }
    }

    /// Its descriptor went over (or could not): closed here, quietly if it went.
    /// Called whether or not its channel closed meanwhile.
    func endHandover(handedOver: Bool) {
        if handedOver { self.handedOver = true }
        if taken {
            taken = false
            // It ended during the send: only now is it known whose session this is.
            if sessionClosePostponed, !handedOver { command(.sessionClose, bytes: session.commandBytes) }
        }
        guard let context else { return }
        closing = true
        registry?.remove(self, room: roomID)
        if handedOver, hold.pending.readableBytes != unreadTaken {
            // Reads are paused since the stop; bytes here now did not travel.
            services.logger.error("handover: bytes arrived after a WebSocket's state was taken", metadata: ["connection": "\(key)"])
        }
        if handedOver {
            // The new process holds the socket open: this close sends nothing to the client.
            context.close(promise: nil)
        } else {
            Self.sendClose(WebSocketErrorCode(codeNumber: 1012), context: context, frame: wrapOutboundOut)
        }
    }

    /// Closes it with 1012: the handover could not take it.
    func closeForRestart() {
        guard let context, !closing else { return }
        close(code: WebSocketErrorCode(codeNumber: 1012), context: context)
    }

    /// Calls `done(true)` once every frame written so far is on the wire, or
    /// `done(false)` (the socket closed with 1012) after `handoverFlushBound`.
    private func flushed(_ context: ChannelHandlerContext, _ done: @escaping (Bool) -> Void) {
        guard let encoder = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self) else { return done(false) }
        let loop = context.eventLoop
        let me = NIOLoopBound(self, eventLoop: loop)
        let answered = NIOLoopBoundBox(false, eventLoop: loop)
        let finish = NIOLoopBound({ (ok: Bool) in
            guard !answered.value else { return }
            answered.value = true
            if !ok, let context = me.value.context { me.value.close(code: WebSocketErrorCode(codeNumber: 1012), context: context) }
            done(ok)
        }, eventLoop: loop)
        let bound = loop.scheduleTask(in: Self.handoverFlushBound) { finish.value(false) }
        // An empty write below the encoder completes after every write before it.
        let written = loop.makePromise(of: Void.self)
        encoder.writeAndFlush(NIOAny(ByteBuffer()), promise: written)
        written.futureResult.whenComplete { result in
            bound.cancel()
            if case .success = result { finish.value(true) } else { finish.value(false) }
        }
    }
}

/// A socket's commands awaiting replies, counted from any thread; once it
/// stops for a handover, each reply is also reported (`watch`).
final class CommandCount: Sendable {
    private let count = Atomic<Int>(0)
    let watch = Mutex<(@Sendable () -> Void)?>(nil)

    var pending: Int { count.load(ordering: .sequentiallyConsistent) }

    /// Counts one; the closure counts its reply.
    func sent() -> @Sendable () -> Void {
        count.add(1, ordering: .sequentiallyConsistent)
        return { [self] in
            count.subtract(1, ordering: .sequentiallyConsistent)
            watch.withLock { $0 }?()
        }
    }
}

/// What a new frontend adopts a socket with (HandoverReceiver's `adopt`).
struct HandoverAdoption: Sendable {
    let state: HandoverConnection
    let identity: Identity
    let session: Requests.Session
    let expires: Date
    /// Told on the socket's loop how many events it replayed (nil: closed
    /// with 1012) and how long it paused, ns.
    let adopted: @Sendable (Int?, UInt64) -> Void
}
