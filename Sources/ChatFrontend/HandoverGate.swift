import NIOCore
import NIOWebSocket

/// What a WebSocket has read and not yet parsed, shared by its gate and
/// its connection: always less than one whole message (`HandoverGate`
/// passes every complete one on at once), so it is exactly what a handover
/// carries as `unread`. `paused`: a handover stopped the socket; bytes still
/// arriving (reads already under way) are kept here, not parsed.
final class HandoverHold {
    var pending: ByteBuffer
    var paused = false

    init(pending: ByteBuffer) { self.pending = pending }
}

/// Sits before NIO's WebSocket frame decoder and passes it whole messages
/// only. NIO's parser is incremental and keeps a partial frame in its own
/// state, out of reach; this keeps every byte of an unfinished message in
/// `hold` instead, so that a handover finds the socket at a message
/// boundary with the rest in hand. A message is a data frame with FIN, or
/// the fragments up to the final one (with any control frames between); a
/// control frame outside a message is one by itself. A frame longer than
/// the limit, or a hold past it, goes on as it is: the decoder refuses it
/// as before. (In front of the decoder rather than replacing it: the bytes
/// an upgrade buffered reach the handlers after the upgrader, and NIO's
/// decoder, which the upgrader adds, leaves a pipeline only a turn later.)
final class HandoverGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let hold: HandoverHold
    let maxFrameSize: Int

    init(hold: HandoverHold, maxFrameSize: Int) {
        self.hold = hold
        self.maxFrameSize = maxFrameSize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        hold.pending.writeBuffer(&buffer)
        guard !hold.paused else { return }
        let whole = HandoverFraming.wholeMessages(hold.pending, maxFrameSize: maxFrameSize)
        guard whole > 0, let messages = hold.pending.readSlice(length: whole) else { return }
        hold.pending.discardReadBytes()
        context.fireChannelRead(wrapInboundOut(messages))
    }
}

/// RFC 6455 §5.2 frame headers, read only for their lengths and bits.
enum HandoverFraming {
    /// How many leading readable bytes of `buffer` are whole messages (see
    /// `HandoverGate`); all of them once a frame or the unfinished
    /// message is past what the decoder accepts, so that it refuses it.
    static func wholeMessages(_ buffer: ByteBuffer, maxFrameSize: Int) -> Int {
        let count = buffer.readableBytes
        var offset = 0
        var boundary = 0
        var inMessage = false
        while let (headerLength, payload, fin, opcode) = header(buffer, at: offset) {
            if payload > UInt64(maxFrameSize) { return count }
            let end = offset + headerLength + Int(payload)
            guard end <= count else { break }
            offset = end
            // Control frames (opcode 8 and up) may come between a message's fragments.
            if opcode & 0x8 == 0 { inMessage = !fin }
            if !inMessage { boundary = offset }
        }
        // An unfinished message longer than a frame may be: the aggregator's limit decides.
        if count - boundary > maxFrameSize + 4_096 { return count }
        return boundary
    }

    /// The header `offset` bytes into the readable bytes: its length, the
    /// payload's, FIN and the opcode; nil while incomplete.
    static func header(_ buffer: ByteBuffer, at offset: Int) -> (Int, UInt64, Bool, UInt8)? {
        let base = buffer.readerIndex + offset
        guard buffer.readableBytes - offset >= 2, let first = buffer.getInteger(at: base, as: UInt8.self),
            let second = buffer.getInteger(at: base + 1, as: UInt8.self)
        else { return nil }
        var length = 2
        var payload = UInt64(second & 0x7f)
        if payload == 126 {
            guard let extended = buffer.getInteger(at: base + 2, as: UInt16.self) else { return nil }
            payload = UInt64(extended)
            length += 2
        } else if payload == 127 {
            guard let extended = buffer.getInteger(at: base + 2, as: UInt64.self) else { return nil }
            payload = extended
            length += 8
        }
        if second & 0x80 != 0 { length += 4 }
        return (length, payload, first & 0x80 != 0, first & 0x0f)
    }
}
