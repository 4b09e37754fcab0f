import Foundation
import Logging
import Synchronization

/// How every chatd process writes its log to standard error (`logFormat`,
/// CHAT_LOG_FORMAT): swift-log's text lines, or one JSON object per line
/// for a log shipper. One value for the whole process tree: the supervisor
/// passes its own to every child (`fixedEnvironment`).
public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json
}

/// One JSON object per line on standard error:
/// `{"time":"2026-11-30T21:07:21.123Z","level":"info","label":"chatd.supervisor",
/// "role":"supervisor","pid":4242,"message":"child exited","metadata":{"child":"store.0"}}`.
/// `time` is RFC 3339 in UTC with milliseconds; `role` is the process's place in
/// the tree (`supervisor`, `frontend.0`, `store.1`, `standby.search` ...), `pid`
/// its pid, so lines of every process, interleaved in one stream, stay apart.
/// Metadata is an object (nested values as objects and arrays), left out when
/// empty; an error attached to the event is `error`.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    let label: String
    /// Asked at each line: a promoted standby takes its worker's name.
    let role: @Sendable () -> String
    let pid: Int32

    public init(label: String, role: String, pid: Int32 = getpid()) {
        self.init(label: label, pid: pid) { role }
    }

    init(label: String, pid: Int32, role: @escaping @Sendable () -> String) {
        self.label = label
        self.role = role
        self.pid = pid
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        var line = encode(level: event.level, message: event.message.description, metadata: merged, error: event.error.map { "\($0)" }, time: Date())
        line.append(UInt8(ascii: "\n"))
        Self.writeLine(line)
    }

    /// One line, without its newline.
    public func encode(level: Logger.Level, message: String, metadata: Logger.Metadata, error: String? = nil, time: Date) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + message.utf8.count)
        out += #"{"time":""#.utf8
        out += Self.rfc3339(time).utf8
        out += #"","level":""#.utf8
        out += level.rawValue.utf8
        out += #"","label":"#.utf8
        Self.appendString(label, to: &out)
        out += #","role":"#.utf8
        Self.appendString(role(), to: &out)
        out += #","pid":"#.utf8
        out += String(pid).utf8
        out += #","message":"#.utf8
        Self.appendString(message, to: &out)
        if let error {
            out += #","error":"#.utf8
            Self.appendString(error, to: &out)
        }
        if !metadata.isEmpty {
            out += #","metadata":"#.utf8
            Self.appendObject(metadata, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// Keys in order, so that lines of one event are alike and diffable.
    static func appendObject(_ metadata: Logger.Metadata, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        for (index, key) in metadata.keys.sorted().enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendValue(metadata[key]!, to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    static func appendValue(_ value: Logger.Metadata.Value, to out: inout [UInt8]) {
        switch value {
        case .string(let string): appendString(string, to: &out)
        case .stringConvertible(let value): appendString(value.description, to: &out)
        case .dictionary(let nested): appendObject(nested, to: &out)
        case .array(let values):
            out.append(UInt8(ascii: "["))
            for (index, element) in values.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                appendValue(element, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
    }

    /// A JSON string (RFC 8259 §7): quote, backslash and the control
    /// characters escaped, everything else as its UTF-8 bytes.
    static func appendString(_ string: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20, 0x7f:
                out += Array(#"\u00"#.utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xf)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// `2026-11-30T21:07:21.123Z`.
    static func rfc3339(_ date: Date) -> String {
        let interval = date.timeIntervalSince1970
        var seconds = time_t(interval.rounded(.down))
        let millis = min(999, Int((interval - Double(seconds)) * 1000))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(Int(parts.tm_year) + 1900, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2))T"
            + "\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2)).\(pad(millis, 3))Z"
    }

    /// The whole line in one write(2): every process of the tree shares the
    /// same standard error, and a pipe keeps a write of up to PIPE_BUF (4 KiB)
    /// whole; a longer line may interleave with another process's only there.
    static func writeLine(_ line: [UInt8]) {
        line.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(STDERR_FILENO, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }
}

/// The process's log handlers, chosen once at start by `logFormat`.
public enum LogOutput {
    private static let bootstrapped = Mutex(false)
    private static let role = Mutex("")

    /// The process's role in JSON lines from now on: a standby promoted to
    /// `store.1` logs as `store.1`.
    public static func rename(role name: String) {
        role.withLock { $0 = name }
    }

    /// Makes every `Logger(label:)` of this process write in `format` at
    /// `level`; later calls change nothing (swift-log takes one bootstrap).
    public static func bootstrap(format: LogFormat, level: Logger.Level, role: String) {
        let first = bootstrapped.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        rename(role: role)
        let pid = getpid()
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = switch format {
            case .text: StreamLogHandler.standardError(label: label)
            case .json: JSONLogHandler(label: label, pid: pid) { LogOutput.role.withLock { $0 } }
            }
            handler.logLevel = level
            return handler
        }
    }
}
