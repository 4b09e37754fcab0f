import ChatCore
import ChatStore

/// PostgreSQL's text cannot hold a NUL: a statement binding one fails
/// (22021) and aborts its transaction, which on the read side is the whole
/// batch of a shard's reads, other users' too (invariant 5). The frontend
/// refuses NUL in query parameters, token claims and text fields; this is
/// the engine's own guard for whatever else carries one: the command is
/// refused (400) before the statement is sent, and the transaction goes on.
extension PostgresValue {
    var hasNUL: Bool {
        switch self {
        case .text(let value?): Validation.hasNUL(value)
        case .texts(let values): values.contains(where: Validation.hasNUL)
        case .text(nil), .int, .bool, .ints: false
        }
    }

    static func refuseNUL(_ values: [PostgresValue]) throws {
        if values.contains(where: \.hasNUL) { throw StoreError(code: .badRequest, detail: Validation.nulMessage) }
    }
}
