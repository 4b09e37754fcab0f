import ChatStore
import Foundation
import PostgresNIO

/// Issue 16's webhook statements (ChatStore's WebhookStore) on PostgreSQL.
extension PostgresTransaction {
    func rows(_ sql: String, _ values: [SQLValue]) throws -> [[String?]] {
        try query(sql, values.map(Self.value)).rows.map { row in
            try row.map { cell -> String? in
                guard cell.bytes != nil else { return nil }
                switch cell.dataType {
                case .int2, .int4, .int8: return String(try cell.decode(Int64.self))
                default: return try cell.decode(String.self)
                }
            }
        }
    }

    @discardableResult
    func run(_ sql: String, _ values: [SQLValue]) throws -> Int {
        try query(sql, values.map(Self.value)).changed
    }

    static func value(_ value: SQLValue) -> PostgresValue {
        switch value {
        case .text(let text): .text(text)
        case .int(let number): .int(number)
        case .null: .text(nil)
        }
    }
}
