import ChatCore

/// Reads a JSON object whose values are all strings or `null`: the body of
/// `message.create` as the frontend writes it for every WebSocket message.
/// Foundation's `JSONDecoder` was a tenth of the store worker's CPU per
/// message. Anything else (a nested value, a number, a duplicate key, a lone
/// surrogate, bytes that are not UTF-8) gives nil, and the caller decodes
/// with `JSONDecoder`: a body this does not read is read, or refused,
/// exactly as before.
enum FlatJSON {
    static func object(_ bytes: [UInt8]) -> [String: String?]? {
        var parser = Parser(bytes: bytes)
        return parser.object()
    }

    struct Parser {
        let bytes: [UInt8]
        var at = 0

        mutating func object() -> [String: String?]? {
            guard next() == UInt8(ascii: "{") else { return nil }
            var result: [String: String?] = [:]
            if peek() == UInt8(ascii: "}") {
                at += 1
            } else {
                while true {
                    guard next() == UInt8(ascii: "\""), let key = string(), next() == UInt8(ascii: ":") else { return nil }
                    let value: String?
                    switch next() {
                    case UInt8(ascii: "\""): guard let text = string() else { return nil }; value = text
                    case UInt8(ascii: "n"): guard literal("ull") else { return nil }; value = nil
                    default: return nil
                    }
                    guard result.updateValue(value, forKey: key) == nil else { return nil }
                    let separator = next()
                    if separator == UInt8(ascii: "}") { break }
                    guard separator == UInt8(ascii: ",") else { return nil }
                }
            }
            return peek() == nil ? result : nil
        }

        /// The next byte that is not JSON whitespace, consumed.
        mutating func next() -> UInt8? {
            guard let byte = peek() else { return nil }
            at += 1
            return byte
        }

        /// The next byte that is not JSON whitespace (skipped), or nil at the end.
        mutating func peek() -> UInt8? {
            while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x0A || bytes[at] == 0x0D || bytes[at] == 0x09 { at += 1 }
            return at < bytes.count ? bytes[at] : nil
        }

        mutating func literal(_ rest: String) -> Bool {
            let tail = Array(rest.utf8)
            guard bytes.count - at >= tail.count, Array(bytes[at..<at + tail.count]) == tail else { return false }
            at += tail.count
            return true
        }

        /// A string's contents, after its opening quote, through its closing one.
        mutating func string() -> String? {
            var out: [UInt8] = []
            while at < bytes.count {
                let byte = bytes[at]
                at += 1
                switch byte {
                case UInt8(ascii: "\""): return String(validating: out, as: UTF8.self)
                case UInt8(ascii: "\\"): guard escape(into: &out) else { return nil }
                case 0..<0x20: return nil
                default: out.append(byte)
                }
            }
            return nil
        }

        mutating func escape(into out: inout [UInt8]) -> Bool {
            guard at < bytes.count else { return false }
            let byte = bytes[at]
            at += 1
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(byte); return true
            case UInt8(ascii: "b"): out.append(0x08); return true
            case UInt8(ascii: "f"): out.append(0x0C); return true
            case UInt8(ascii: "n"): out.append(0x0A); return true
            case UInt8(ascii: "r"): out.append(0x0D); return true
            case UInt8(ascii: "t"): out.append(0x09); return true
            default: break
            }
            guard byte == UInt8(ascii: "u"), var scalar = hex4() else { return false }
            if (0xD800..<0xDC00).contains(scalar) {
                guard literal("\\u"), let low = hex4(), (0xDC00..<0xE000).contains(low) else { return false }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let unicode = Unicode.Scalar(scalar) else { return false }
            out.append(contentsOf: Array(String(Character(unicode)).utf8))
            return true
        }

        mutating func hex4() -> UInt32? {
            guard bytes.count - at >= 4 else { return nil }
            var value: UInt32 = 0
            for byte in bytes[at..<at + 4] {
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: return nil
                }
                value = value << 4 | UInt32(digit)
            }
            at += 4
            return value
        }
    }
}

extension Requests.MessageCreate {
    /// The fields `FlatJSON` read, when every required one is a string and
    /// no attachment came (`file` is an object: never read here).
    init?(flat fields: [String: String?]) {
        guard let id = fields["id"] ?? nil, let roomID = fields["roomID"] ?? nil, let content = fields["content"] ?? nil,
            let messageType = fields["messageType"] ?? nil, fields["file"] == nil else { return nil }
        self.init(id: id, roomID: roomID, content: content, messageType: messageType,
                  replyTo: fields["replyTo"] ?? nil, clientMsgID: fields["clientMsgID"] ?? nil)
    }
}
