import Foundation

/// A point in time in microseconds since the Unix epoch: the resolution the API
/// promises ("timestamps carry microseconds"), stored as an integer so ordering
/// and comparisons in SQL are exact.
public struct Timestamp: Sendable, Hashable, Comparable, Codable {
    public var micros: Int64

    public init(micros: Int64) { self.micros = micros }

    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(micros: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000)
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.micros < b.micros }

    /// ISO 8601 in UTC with microseconds and a `Z`, as DRF renders datetimes:
    /// `2025-10-02T14:30:00.123456Z`.
    public var iso8601: String {
        var out = [UInt8]()
        out.reserveCapacity(27)
        appendISO8601(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    public func appendISO8601(to out: inout [UInt8]) {
        let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let fraction = micros - seconds * 1_000_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func digits(_ value: Int64, _ count: Int) {
            var divisor: Int64 = 1
            for _ in 1..<count { divisor *= 10 }
            var v = value
            while divisor > 0 {
                out.append(UInt8(48 + (v / divisor) % 10))
                v %= divisor
                divisor /= 10
            }
        }
        digits(year, 4); out.append(UInt8(ascii: "-"))
        digits(month, 2); out.append(UInt8(ascii: "-"))
        digits(day, 2); out.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2); out.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2); out.append(UInt8(ascii: ":"))
        digits(secondOfDay % 60, 2); out.append(UInt8(ascii: "."))
        digits(fraction, 6); out.append(UInt8(ascii: "Z"))
    }
}

extension Timestamp {
    /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z: the years a
    /// timestamp may name (Python's `datetime` range, as the API's clients have).
    public static let earliest = Timestamp(micros: -62_135_596_800_000_000)
    public static let latest = Timestamp(micros: 253_402_300_799_999_999)

    /// Parses an ISO 8601 date (`2025-10-02`, midnight UTC) or date-time
    /// (`2025-10-02T14:30:00Z`; fractional seconds, `Z` or an offset such as
    /// `+02:00`, no offset meaning UTC, a space for the `T`), as Django's
    /// `parse_datetime` and `parse_date` read them. Total: nil for anything
    /// else, a year outside 1–9999 included, and no arithmetic that can trap.
    /// Dates are proleptic Gregorian, as Python's (Foundation's formatter
    /// switches to the Julian calendar before 1582).
    public static func parse(_ text: String) -> Timestamp? {
        // A valid one is at most 38 bytes (12 fraction digits and an offset), spaces aside.
        guard text.utf8.count <= 64 else { return nil }
        var scanner = DigitScanner(Array(text.trimmingCharacters(in: .whitespaces).utf8))
        guard let year = scanner.number(digits: 4...4), scanner.take("-"),
            let month = scanner.number(digits: 1...2), scanner.take("-"),
            let day = scanner.number(digits: 1...2),
            (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day), year >= 1 else { return nil }
        var seconds = daysFromCivil(year: year, month: month, day: day) * 86_400
        var micros: Int64 = 0
        if !scanner.atEnd {
            guard scanner.take("T") || scanner.take("t") || scanner.take(" "),
                let hour = scanner.number(digits: 1...2), scanner.take(":"),
                let minute = scanner.number(digits: 1...2), hour < 24, minute < 60 else { return nil }
            var second: Int64 = 0
            if scanner.take(":") {
                guard let value = scanner.number(digits: 1...2), value < 60 else { return nil }
                second = value
                if scanner.take(".") || scanner.take(",") {
                    // Microseconds from the first six digits; up to six more are ignored.
                    let start = scanner.position
                    guard let fraction = scanner.number(digits: 1...12) else { return nil }
                    var digits = scanner.position - start
                    var value = fraction
                    while digits > 6 { value /= 10; digits -= 1 }
                    while digits < 6 { value *= 10; digits += 1 }
                    micros = value
                }
            }
            seconds += hour * 3600 + minute * 60 + second
            while scanner.take(" ") {}
            if scanner.take("Z") || scanner.take("z") {
            } else if !scanner.atEnd {
                let sign: Int64
                if scanner.take("+") { sign = 1 } else if scanner.take("-") { sign = -1 } else { return nil }
                guard let offsetHours = scanner.number(digits: 2...2) else { return nil }
                var offsetMinutes: Int64 = 0
                if !scanner.atEnd {
                    _ = scanner.take(":")
                    guard let value = scanner.number(digits: 2...2) else { return nil }
                    offsetMinutes = value
                }
                guard offsetHours < 24, offsetMinutes < 60 else { return nil }
                seconds -= sign * (offsetHours * 3600 + offsetMinutes * 60)
            }
        }
        guard scanner.atEnd else { return nil }
        let result = Timestamp(micros: seconds * 1_000_000 + micros)
        // An offset can move a date at either end out of the range.
        return (earliest...latest).contains(result) ? result : nil
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

/// Reads ASCII digits and separators off a byte array, for `Timestamp.parse`.
struct DigitScanner {
    let bytes: [UInt8]
    private(set) var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { position == bytes.count }

    /// Consumes `character` if it is next.
    mutating func take(_ character: Unicode.Scalar) -> Bool {
        guard position < bytes.count, bytes[position] == UInt8(ascii: character) else { return false }
        position += 1
        return true
    }

    /// A run of `digits.lowerBound` to `digits.upperBound` decimal digits (at
    /// most 12, so the value fits), or nil with nothing consumed.
    mutating func number(digits: ClosedRange<Int>) -> Int64? {
        var value: Int64 = 0
        var count = 0
        while count < digits.upperBound, position + count < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position + count]) {
            value = value * 10 + Int64(bytes[position + count] - UInt8(ascii: "0"))
            count += 1
        }
        guard count >= digits.lowerBound else { return nil }
        // More digits than allowed: not this field (`10000-01-01` is no year).
        if position + count < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position + count]) { return nil }
        position += count
        return value
    }
}
