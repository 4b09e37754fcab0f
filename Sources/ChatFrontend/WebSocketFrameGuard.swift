import NIOCore
import NIOWebSocket

/// RFC 6455 §5 and §7 on every frame a client sends, before fragments are put
/// together: a violation fails the connection (`WebSocketConnection` sends a
/// close frame with the code, then closes) and nothing after it is read. NIO's decoder already
/// refuses fragmented or long control frames and frames over the size limit;
/// this checks what it lets through. UTF-8 of whole text messages is checked
/// where they are read (`WebSocketConnection`), since fragments may split a
/// character.
final class WebSocketFrameGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = unwrapInboundIn(data)
        if let code = Self.violation(frame) {
            return fail(code, context: context)
        }
        context.fireChannelRead(data)
    }

    /// The close code a frame earns, or nil when it is allowed.
    static func violation(_ frame: WebSocketFrame) -> WebSocketErrorCode? {
        // §5.1: a client masks every frame. §5.2: no extension is negotiated, so no RSV bit.
        guard frame.maskKey != nil else { return .protocolError }
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else { return .protocolError }
        switch frame.opcode {
        case .continuation, .text, .binary:
            return nil
        case .ping, .pong:
            return frame.fin && frame.length <= 125 ? nil : .protocolError
        case .connectionClose:
            guard frame.fin, frame.length <= 125 else { return .protocolError }
            return closeViolation(frame.unmaskedData)
        default:
            // §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
            return .protocolError
        }
    }

    /// §5.5.1 and §7.4: a close payload is empty, or a code allowed on the
    /// wire and a UTF-8 reason.
    static func closeViolation(_ payload: ByteBuffer) -> WebSocketErrorCode? {
        var payload = payload
        guard payload.readableBytes > 0 else { return nil }
        guard let code = payload.readInteger(as: UInt16.self) else { return .protocolError }
        guard isAllowedOnWire(code) else { return .protocolError }
        guard String(validating: payload.readableBytesView, as: UTF8.self) != nil else { return .dataInconsistentWithMessage }
        return nil
    }

    /// Codes a peer may send (RFC 6455 §7.4.1 and the IANA registry): the
    /// registered protocol codes except those reserved for local use
    /// (1004-1006, 1015), and the ranges for libraries and applications.
    static func isAllowedOnWire(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }

    /// Hands the failure to the connection, which owns the one close path
    /// (one close frame, nothing after it, a bounded wait to write it).
    private func fail(_ code: WebSocketErrorCode, context: ChannelHandlerContext) {
        failed = true
        context.fireErrorCaught(Violation(code: code))
    }

    /// An RFC 6455 violation and the code that fails the connection.
    struct Violation: Error {
        let code: WebSocketErrorCode
    }
}
