import NIOCore

/// Finds, before MultipartKit's `MultipartParser` sees them, the bytes that
/// would end the process in it: 4.7.1 looks each byte of a part header's name
/// up in a 128-entry table, so one byte >= 0x80 there traps (an index out of
/// range), whoever sends it. A header field name is a token (RFC 9110 §5.1,
/// RFC 7578 §4.8): such a byte is a malformed body, answered 400.
///
/// Mirrors the parser's states byte for byte (preamble, part headers, body,
/// boundary, epilogue), with its quirks: the preamble's boundary may start
/// without its CRLF, and header values take any byte (browsers send UTF-8
/// file names raw). Where the parser would throw a syntax error the guard
/// stops looking: the parser refuses the body there itself.
struct MultipartHeaderGuard {
    private enum State: Equatable {
        case preamble(match: Int)
        /// Before the part's first header: `expectingLF` once the CR was read.
        case preHeaders(expectingLF: Bool)
        case headerName(empty: Bool)
        case headerValue
        case postHeaderValue
        case postHeaders
        case body
        case boundary(match: Int)
        /// After the closing boundary, or after a syntax error: nothing more to check.
        case done
    }

    /// `CRLF--boundary`, as the parser matches it.
    private let delimiter: [UInt8]
    private var state = State.preamble(match: 0)

    init(boundary: String) {
        delimiter = Array("\r\n--\(boundary)".utf8)
    }

    /// Reads the next bytes of the body; false when one of them is a byte the
    /// parser cannot take (then the body must not reach it).
    mutating func accepts(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { accepts($0) }
    }

    mutating func accepts(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while index < bytes.count {
            if state == .done { return true }
            if state == .body {
                // Body bytes are never checked: skip to the next CR, where a boundary may start.
                guard let cr = bytes[index...].firstIndex(of: delimiter[0]) else { return true }
                index = cr
                state = .boundary(match: 0)
            }
            if case .preamble(let match) = state, match == delimiter.count {
                // The parser moves on without reading a byte.
                state = .preHeaders(expectingLF: false)
            }
            if case .headerName = state, bytes[index] >= 0x80 { return false }
            state = next(state, bytes[index])
            index += 1
        }
        if case .preamble(let match) = state, match == delimiter.count { state = .preHeaders(expectingLF: false) }
        return true
    }

    /// The state after `byte`, as `MultipartParser` moves (its line numbers in 4.7.1).
    private func next(_ state: State, _ byte: UInt8) -> State {
        let cr: UInt8 = 13, lf: UInt8 = 10, colon: UInt8 = 58
        switch state {
        case .preamble(let match):  // parsePreamble, l. 98
            if match == 0, byte == delimiter[2] { return .preamble(match: 3) }
            if byte == delimiter[match] { return .preamble(match: match + 1) }
            if match > 0, byte == delimiter[0] { return .preamble(match: 1) }
            return .preamble(match: 0)
        case .preHeaders(let expectingLF):  // parseCRLF, l. 125
            if !expectingLF, byte == cr { return .preHeaders(expectingLF: true) }
            if expectingLF, byte == lf { return .headerName(empty: true) }
            return .done
        case .headerName(let empty):  // parseHeaderName, l. 170
            if byte == colon, !empty { return .headerValue }
            if byte == cr, empty { return .postHeaders }
            return Self.isTokenByte(byte) ? .headerName(empty: false) : .done
        case .headerValue:  // parseHeaderValue, l. 189
            return byte == cr ? .postHeaderValue : .headerValue
        case .postHeaderValue:  // l. 153
            return byte == lf ? .headerName(empty: true) : .done
        case .postHeaders:  // l. 159
            return byte == lf ? .body : .done
        case .body:
            return byte == delimiter[0] ? .boundary(match: 1) : .body
        case .boundary(let match):  // parseBoundary, l. 220
            if match >= delimiter.count {
                if byte == cr { return .preHeaders(expectingLF: true) }
                return .done  // `-` begins the epilogue; anything else is a syntax error
            }
            if byte == delimiter[match] { return .boundary(match: match + 1) }
            return byte == delimiter[0] ? .boundary(match: 1) : .body
        case .done:
            return .done
        }
    }

    /// The parser's table of header name bytes (RFC 822 token: visible ASCII
    /// but the separators), for the ASCII bytes it can look up.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        byte > 32 && byte < 127 && !separators.contains(byte)
    }

    private static let separators = Array(#"()<>@,;:\"/[]?={}"#.utf8)
}
