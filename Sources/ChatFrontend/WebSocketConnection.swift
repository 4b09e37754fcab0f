import ChatBus
import ChatCore
import ChatWire
import Foundation
import Logging
import NIOCore
import NIOWebSocket

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
    private var pinged = false

    /// When the token the socket was opened with expires (plus the leeway): the socket closes then (4401).
    let expires: Date
    private var expiry: Scheduled<Void>?

    init(identity: Identity, identityJSON: [UInt8], session: Requests.Session, expires: Date, services: FrontendServices) {
        self.expires = expires
        self.identity = identity
        self.identityJSON = identityJSON
        self.roomID = session.roomID
        self.session = session
        self.services = services
        self.key = ConnectionRef(frontend: services.bus.frontendID, number: services.connections.makeConnectionID())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        wire = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        assert(wire != nil, "the WebSocket upgrader installs the frame encoder before this handler")
        let registry = services.connections.registry(for: context.eventLoop)
        registry.add(self, room: roomID)
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
        // The chat session record, and `user_joined` to the room.
        command(.sessionOpen, bytes: session.commandBytes)
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
        end()
        self.context = nil
        wire = nil
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
        command(.sessionClose, bytes: session.commandBytes)
    }

    /// Sends a command whose answer this connection does not wait for.
    private func command(_ kind: CommandKind, _ body: some Encodable, onReply: (@Sendable (Result<Event, BusFailure>) -> Void)? = nil) {
        guard let bytes = try? JSONEncoder().encode(body) else { return }
        command(kind, bytes: [UInt8](bytes), onReply: onReply)
    }

    private func command(_ kind: CommandKind, bytes: [UInt8], onReply: (@Sendable (Result<Event, BusFailure>) -> Void)? = nil) {
        let destination = Destination.of(kind, shardKey: roomID)
        services.bus.send(kind, to: destination, user: identityJSON, body: bytes) { result in onReply?(result) }
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
        if event is ChannelShouldQuiesceEvent {
            close(code: WebSocketErrorCode(codeNumber: services.life.shutdownCloseCode), context: context)
        } else if let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed {
            // The client went away without a close frame (half-closure is
            // allowed on the server's channels): nothing more will come.
            context.close(promise: nil)
        } else if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            if pinged {
                services.logger.info("closing idle WebSocket", metadata: ["connection": "\(key)"])
                close(code: .goingAway, context: context)
            } else {
                pinged = true
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
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
        let loop = context!.eventLoop
        let me = NIOLoopBound(self, eventLoop: loop)
        // Enqueued synchronously, so this connection's messages reach the
        // shard in the order the client sent them.
        services.bus.send(.messageCreate, to: .store(key: roomID), user: identityJSON, body: body) { result in
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

    /// The text of an `error` event for a refused command: a detail as it is,
    /// otherwise `key: message` per problem, by key, as DRF's body would list them.
    static func errorText(_ reply: Event) -> String {
        guard let error = try? reply.replyError() else { return "Request failed" }
        for case .detail(let detail) in error.problems { return detail }
        return error.problems.map { problem -> (String, String) in
            switch problem {
            case .detail(let message): ("detail", message)
            case .error(let message): ("error", message)
            case .field(let field, let message): (field, message)
            }
        }.sorted { $0.0 < $1.0 }.map { "\($0.0): \($0.1)" }.joined(separator: "; ")
    }
}
