/// The frontend handover protocol (docs/protocol.md, "Frontend handover"):
/// what an old frontend and its replacement say to each other over the
/// SOCK_SEQPACKET socket the supervisor gives them, one message per packet
/// (or fragments of a longer one, `HandoverSocket`), a connection's file
/// descriptor riding with its `connection` message
/// (SCM_RIGHTS). Every message starts with the magic `CHH` and the state
/// version it is written in; a reader refuses any other version before it
/// reads further, so an incompatible binary is refused before anything is
/// handed over.
public enum HandoverMessage: Equatable, Sendable {
    /// Old → new, first: the rooms its sockets are in and how many sockets.
    case offer(rooms: [String], connections: Int)
    /// New → old: it cannot adopt (the version, or it is stopping); the old keeps serving.
    case refuse(reason: String)
    /// New → old: every offered room is subscribed and in force at the
    /// broker, and its events are being buffered: handing over may begin.
    case ready
    /// Old → new, before any connection: idempotency keys (`EventKey`)
    /// every one of its event loops has delivered; the new process delivers
    /// no further copy of them (a worker's resend re-publishes). Only
    /// idempotent keys are written (others are dropped), each in a compact
    /// form: a kind byte, the id, an edit's time.
    case delivered(keys: [EventKey])
    /// New → old: the delivered keys are in force on every loop; only now
    /// does the old stop its first socket, so no socket's pause holds the
    /// keys' parse.
    case seeded
    /// Old → new: one connection's state; its descriptor rides with it.
    case connection(HandoverConnection)
    /// Old → new: nothing more follows (its count, for the log).
    case done(connections: Int)

    /// The state version this binary writes and reads. Raised whenever a
    /// field changes meaning or is added: readers accept only their own.
    /// 2: `delivered` in the compact form, and `seeded` after it.
    public static let version: UInt16 = 2
    static let magic: [UInt8] = Array("CHH".utf8)

    enum Tag: UInt8 {
        case offer = 1, refuse, ready, connection, done, delivered, seeded
    }

    public func encode() -> [UInt8] {
        var writer = HandoverWriter()
        writer.bytes(Self.magic, counted: false)
        writer.u16(Self.version)
        switch self {
        case .offer(let rooms, let connections):
            writer.u8(Tag.offer.rawValue)
            writer.u32(UInt32(connections))
            writer.u32(UInt32(rooms.count))
            for room in rooms { writer.string(room) }
        case .refuse(let reason):
            writer.u8(Tag.refuse.rawValue)
            writer.string(reason)
        case .ready:
            writer.u8(Tag.ready.rawValue)
        case .connection(let connection):
            writer.u8(Tag.connection.rawValue)
            connection.write(to: &writer)
        case .done(let connections):
            writer.u8(Tag.done.rawValue)
            writer.u32(UInt32(connections))
        case .delivered(let keys):
            writer.u8(Tag.delivered.rawValue)
            let idempotent = keys.filter(\.isIdempotent)
            writer.u32(UInt32(idempotent.count))
            for key in idempotent { writer.key(key) }
        case .seeded:
            writer.u8(Tag.seeded.rawValue)
        }
        return writer.output
    }

    /// Reads one message; throws `HandoverError` for another version than
    /// `accepting` (this binary's) or a malformed one.
    public init(bytes: [UInt8], accepting: UInt16 = Self.version) throws(HandoverError) {
        var reader = HandoverReader(bytes)
        guard try reader.raw(Self.magic.count) == Self.magic else { throw .notHandover }
        let version = try reader.u16()
        guard version == accepting else { throw .version(version) }
        guard let tag = Tag(rawValue: try reader.u8()) else { throw .malformed }
        switch tag {
        case .offer:
            let connections = Int(try reader.u32())
            let count = try reader.u32()
            // Each room takes at least its 4-byte length: a count past that is a lie.
            guard Int(count) <= reader.remaining / 4 else { throw .malformed }
            var rooms: [String] = []
            for _ in 0..<count { rooms.append(try reader.string()) }
            self = .offer(rooms: rooms, connections: connections)
        case .refuse: self = .refuse(reason: try reader.string())
        case .ready: self = .ready
        case .connection: self = .connection(try HandoverConnection(from: &reader))
        case .done: self = .done(connections: Int(try reader.u32()))
        case .delivered:
            let count = try reader.u32()
            // Each key takes at least its kind and its id's 4-byte length.
            guard Int(count) <= reader.remaining / 5 else { throw .malformed }
            var keys: [EventKey] = []
            keys.reserveCapacity(Int(count))
            for _ in 0..<count { keys.append(try reader.key()) }
            self = .delivered(keys: keys)
        case .seeded: self = .seeded
        }
        guard reader.remaining == 0 else { throw .malformed }
    }
}

/// Why a handover message was not read.
public enum HandoverError: Error, Equatable, Sendable {
    /// Not a handover message at all.
    case notHandover
    /// Written in another state version: the handover is refused.
    case version(UInt16)
    /// Cut short or with a field out of range.
    case malformed
}

/// One WebSocket as the old frontend hands it over: everything the new one
/// needs to go on serving it as if nothing happened.
public struct HandoverConnection: Equatable, Sendable {
    /// The old frontend's id and its number for the connection: the
    /// connection keeps this `ConnectionRef` (typing events name it).
    public var frontendID: String
    public var number: UInt64
    /// The verified caller, as the bus carries it (`user` frame).
    public var identityJSON: [UInt8]
    /// When its token expires (leeway included), µs since the epoch.
    public var expiresMicros: Int64
    /// The room (a direct room for `/ws/direct/`), and the chat session
    /// record's JSON (`Requests.Session`), which stays open across the handover.
    public var roomID: String
    public var sessionJSON: [UInt8]
    /// Milliseconds since the client last sent a frame, and whether the
    /// server's idle ping already went out: the idle timeout goes on.
    public var idleMillis: UInt32
    public var pinged: Bool
    /// Tokens left in the user's WebSocket event bucket (rate limits), or
    /// nil when limits are off.
    public var eventTokens: Double?
    /// Hashes (`HandoverLog.hash`) of the room's events the old frontend
    /// received since the handover began, up to the moment this socket
    /// stopped, oldest first, at most `HandoverLog.capacity`; `logTruncated`
    /// when older ones were dropped.
    public var written: [UInt64]
    public var logTruncated: Bool
    /// Bytes read from the socket and not yet parsed into a frame.
    public var unread: [UInt8]
    /// When its reads stopped, CLOCK_MONOTONIC nanoseconds (one clock for
    /// every process of the host): the new process measures the pause.
    public var stoppedAt: UInt64 = 0

    public init(
        frontendID: String, number: UInt64, identityJSON: [UInt8], expiresMicros: Int64, roomID: String, sessionJSON: [UInt8],
        idleMillis: UInt32, pinged: Bool, eventTokens: Double?, written: [UInt64], logTruncated: Bool, unread: [UInt8], stoppedAt: UInt64 = 0
    ) {
        self.frontendID = frontendID
        self.number = number
        self.identityJSON = identityJSON
        self.expiresMicros = expiresMicros
        self.roomID = roomID
        self.sessionJSON = sessionJSON
        self.idleMillis = idleMillis
        self.pinged = pinged
        self.eventTokens = eventTokens
        self.written = written
        self.logTruncated = logTruncated
        self.unread = unread
        self.stoppedAt = stoppedAt
    }

    func write(to writer: inout HandoverWriter) {
        writer.string(frontendID)
        writer.u64(number)
        writer.bytes(identityJSON)
        writer.u64(UInt64(bitPattern: expiresMicros))
        writer.string(roomID)
        writer.bytes(sessionJSON)
        writer.u32(idleMillis)
        writer.u8((pinged ? 1 : 0) | (eventTokens != nil ? 2 : 0) | (logTruncated ? 4 : 0))
        if let eventTokens { writer.u64(eventTokens.bitPattern) }
        writer.u32(UInt32(written.count))
        for hash in written { writer.u64(hash) }
        writer.bytes(unread)
        writer.u64(stoppedAt)
    }

    init(from reader: inout HandoverReader) throws(HandoverError) {
        frontendID = try reader.string()
        number = try reader.u64()
        identityJSON = try reader.bytes()
        expiresMicros = Int64(bitPattern: try reader.u64())
        roomID = try reader.string()
        sessionJSON = try reader.bytes()
        idleMillis = try reader.u32()
        let flags = try reader.u8()
        guard flags & ~7 == 0 else { throw .malformed }
        pinged = flags & 1 != 0
        eventTokens = flags & 2 != 0 ? Double(bitPattern: try reader.u64()) : nil
        logTruncated = flags & 4 != 0
        let count = Int(try reader.u32())
        guard count <= reader.remaining / 8 else { throw .malformed }
        written = []
        written.reserveCapacity(count)
        for _ in 0..<count { written.append(try reader.u64()) }
        unread = try reader.bytes()
        stoppedAt = try reader.u64()
    }
}

/// Big-endian fields, each string or byte run after its 32-bit length.
struct HandoverWriter {
    var output: [UInt8] = []

    mutating func u8(_ value: UInt8) { output.append(value) }
    mutating func u16(_ value: UInt16) { withUnsafeBytes(of: value.bigEndian) { output.append(contentsOf: $0) } }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.bigEndian) { output.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.bigEndian) { output.append(contentsOf: $0) } }

    mutating func bytes(_ value: [UInt8], counted: Bool = true) {
        if counted { u32(UInt32(value.count)) }
        output.append(contentsOf: value)
    }

    mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            u32(UInt32(utf8.count))
            output.append(contentsOf: utf8)
        }
    }

    /// An idempotent key (`HandoverMessage.delivered`): its kind, its id, an edit's time.
    mutating func key(_ key: EventKey) {
        switch key {
        case .message(let id, let change):
            switch change {
            case .created: u8(1)
            case .edited: u8(2)
            case .deleted: u8(3)
            }
            string(id)
            if case .edited(let micros) = change { u64(UInt64(bitPattern: micros)) }
        case .session(let id, let change):
            u8(change == .joined ? 4 : 5)
            string(id)
        case .none, .except, .removeUser, .removeEveryone, .onlyUser, .onlyDevice:
            preconditionFailure("only idempotent keys are written")
        }
    }
}

struct HandoverReader {
    let input: [UInt8]
    var offset = 0

    init(_ input: [UInt8]) { self.input = input }

    var remaining: Int { input.count - offset }

    mutating func raw(_ count: Int) throws(HandoverError) -> [UInt8] {
        guard count >= 0, count <= remaining else { throw .malformed }
        defer { offset += count }
        return Array(input[offset..<offset + count])
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(HandoverError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw .malformed }
        var value: T = 0
        for byte in input[offset..<offset + size] { value = value << 8 | T(byte) }
        offset += size
        return value
    }

    mutating func u8() throws(HandoverError) -> UInt8 { try integer(UInt8.self) }
    mutating func u16() throws(HandoverError) -> UInt16 { try integer(UInt16.self) }
    mutating func u32() throws(HandoverError) -> UInt32 { try integer(UInt32.self) }
    mutating func u64() throws(HandoverError) -> UInt64 { try integer(UInt64.self) }
    mutating func bytes() throws(HandoverError) -> [UInt8] { try raw(Int(try u32())) }

    mutating func string() throws(HandoverError) -> String {
        let count = Int(try u32())
        guard count <= remaining else { throw .malformed }
        // Validated straight from the input: no copy of the bytes first.
        guard let text = String(validating: input[offset..<offset + count], as: UTF8.self) else { throw .malformed }
        offset += count
        return text
    }

    /// A key as `HandoverWriter.key` writes it.
    mutating func key() throws(HandoverError) -> EventKey {
        let kind = try u8()
        guard (1...5).contains(kind) else { throw .malformed }
        let id = try string()
        // An id never contains `:` (`EventKey`): one that does is no key.
        guard !id.isEmpty, !id.utf8.contains(UInt8(ascii: ":")) else { throw .malformed }
        switch kind {
        case 1: return .message(id: id, change: .created)
        case 2: return .message(id: id, change: .edited(at: Int64(bitPattern: try u64())))
        case 3: return .message(id: id, change: .deleted)
        case 4: return .session(id: id, change: .joined)
        default: return .session(id: id, change: .left)
        }
    }
}

/// How a handover went, as the new frontend tells the supervisor (the
/// sd_notify field `CHATD_HANDOVER`) and `ctl status` shows it, after the
/// report's own version (`v=`, `HandoverReport.version`):
///
///     v=1 adopted=120 replayed=37 gaps=0 ms=41 pause50us=2100 pausemaxus=9800
///     v=1 refused=state version 3; this frontend reads 2
public struct HandoverReport: Equatable, Sendable, CustomStringConvertible {
    public static let field = "CHATD_HANDOVER"
    /// The environment variable that makes a frontend a successor: its
    /// predecessor's handover socket.
    public static let predecessorVariable = "CHATD_HANDOVER_FROM"
    /// Makes a successor read only this state version, as a binary of
    /// another version would: how the refusal is tested end to end.
    public static let readsVariable = "CHATD_HANDOVER_READS"
    /// Milliseconds the old frontend's stopped sockets wait for their
    /// commands' replies (2,000 unless set): tests make it long enough not
    /// to race, or short.
    public static let drainBoundVariable = "CHAT_HANDOVER_DRAIN_BOUND_MS"
    /// The report's format version, apart from the state version (a frontend
    /// of one binary reports to a supervisor of another after `ctl upgrade`).
    /// Raised whenever a field changes meaning or is added; a report without
    /// it (written before it existed) is version 0.
    public static let version: UInt = 1

    /// Why a report was not read.
    public enum ReadError: Error, Equatable, Sendable {
        /// Written in another report version: its fields may mean something else.
        case version(UInt)
        /// Not a report of this version's shape.
        case malformed
    }

    /// Where frontend process `pid` listens for its successor.
    public static func socketPath(runtimeDir: String, pid: Int32) -> String {
        (runtimeDir.hasSuffix("/") ? runtimeDir : runtimeDir + "/") + "handover.\(pid).sock"
    }

    /// WebSockets adopted, and the buffered events replayed to them.
    public var adopted = 0
    public var replayed = 0
    /// Sockets closed with 1012 at adoption: where they stopped was not known.
    public var gaps = 0
    /// From the successor's connect to its last adoption.
    public var millis: UInt64 = 0
    /// Each socket's pause (its reads stopped in the old process until it
    /// resumed in the new one), median and longest, µs.
    public var pauseMedianMicros: UInt64 = 0
    public var pauseMaxMicros: UInt64 = 0
    /// Why nothing was handed over; nil when it was.
    public var refused: String?

    public init(
        adopted: Int = 0, replayed: Int = 0, gaps: Int = 0, millis: UInt64 = 0, pauseMedianMicros: UInt64 = 0, pauseMaxMicros: UInt64 = 0,
        refused: String? = nil
    ) {
        self.adopted = adopted
        self.replayed = replayed
        self.gaps = gaps
        self.millis = millis
        self.pauseMedianMicros = pauseMedianMicros
        self.pauseMaxMicros = pauseMaxMicros
        self.refused = refused
    }

    public var description: String {
        let version = "v=\(Self.version) "
        if let refused { return version + "refused=" + refused.filter { $0 != "\n" } }
        return version
            + "adopted=\(adopted) replayed=\(replayed) gaps=\(gaps) ms=\(millis) pause50us=\(pauseMedianMicros) pausemaxus=\(pauseMaxMicros)"
    }

    /// Reads `description` back; nil for anything else (`read` says why).
    public init?(_ text: String) {
        guard case .success(let report) = Self.read(text) else { return nil }
        self = report
    }

    /// Reads `description` back: the version first, and nothing further
    /// of a report in another version.
    public static func read(_ text: String) -> Result<HandoverReport, ReadError> {
        var rest = Substring(text)
        var version: UInt = 0
        if rest.hasPrefix("v=") {
            let field = rest.prefix { $0 != " " }
            guard let number = UInt(field.dropFirst(2)) else { return .failure(.malformed) }
            version = number
            rest = rest.dropFirst(field.count + 1)
        }
        guard version == Self.version else { return .failure(.version(version)) }
        if rest.hasPrefix("refused=") { return .success(HandoverReport(refused: String(rest.dropFirst("refused=".count)))) }
        var values: [String: UInt64] = [:]
        for pair in rest.split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let value = UInt64(parts[1]) else { return .failure(.malformed) }
            values[String(parts[0])] = value
        }
        guard let adopted = values["adopted"], let replayed = values["replayed"], let gaps = values["gaps"], let millis = values["ms"],
            let median = values["pause50us"], let longest = values["pausemaxus"], values.count == 6
        else { return .failure(.malformed) }
        return .success(
            HandoverReport(
                adopted: Int(adopted), replayed: Int(replayed), gaps: Int(gaps), millis: millis, pauseMedianMicros: median,
                pauseMaxMicros: longest
            )
        )
    }
}
