import Foundation

/// Why a worker refused a command: the body of a reply whose status is an
/// error. Workers produce it; the frontend renders it as a DRF JSON body (REST)
/// or as the text of an `error` event (WebSocket), so no client-facing JSON is
/// parsed back.
///
/// On the bus the body is a JSON array of problems, in order:
///
///     [{"kind":"detail","message":"Not found."},
///      {"kind":"field","field":"name","message":"This field is required."}]
public struct ReplyError: Error, Sendable, Equatable {
    public enum Problem: Sendable, Equatable {
        /// DRF's `{"detail": message}`.
        case detail(String)
        /// The seed's `{"error": message}` for refused actions.
        case error(String)
        /// DRF's field error, `{"<field>": [message]}`.
        case field(String, String)
    }

    /// An error status (`Status.isError`).
    public var status: Status
    /// Never empty.
    public var problems: [Problem]

    /// Total, because a worker builds these from whatever its checks found:
    /// a success status becomes 500 and no problems a generic one, rather
    /// than a trap that would kill the worker (and make the command look
    /// like poison).
    public init(_ status: Status, _ problems: [Problem]) {
        self.status = status.isError ? status : .internal
        self.problems = problems.isEmpty ? [.detail(status == .badRequest ? "Invalid request." : "A server error occurred.")] : problems
    }

    public static func detail(_ status: Status, _ message: String) -> ReplyError {
        ReplyError(status, [.detail(message)])
    }

    public static func fields(_ errors: [(field: String, message: String)]) -> ReplyError {
        ReplyError(.badRequest, errors.map { .field($0.field, $0.message) })
    }

    /// Storage trouble: the client may try again.
    public static let storageUnavailable = detail(.unavailable, "Storage is unavailable, try again.")
    /// What the frontend's bus client answers, itself, for a command that was
    /// in flight at two worker deaths (docs/protocol.md "Poison commands").
    public static let poisonCommand = detail(.internal, "This request was being processed when a server worker stopped, twice; it was not retried again.")

    private struct Coded: Codable {
        var kind: String
        var field: String?
        var message: String
    }

    /// The body frame of the reply.
    public func encode() -> [UInt8] {
        let coded = problems.map { problem -> Coded in
            switch problem {
            case .detail(let message): Coded(kind: "detail", message: message)
            case .error(let message): Coded(kind: "error", message: message)
            case .field(let field, let message): Coded(kind: "field", field: field, message: message)
            }
        }
        // Sorted keys: the same error is the same bytes (JSONEncoder's key
        // order is otherwise unspecified). Strings and optionals cannot fail.
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return (try? [UInt8](encoder.encode(coded))) ?? []
    }

    /// Decodes the body of a reply with an error status.
    public init(status: Status, body: [UInt8]) throws(WireError) {
        guard status.isError else { throw .malformed("reply error with status \(status.rawValue)") }
        guard let coded = try? JSONDecoder().decode([Coded].self, from: Data(body)), !coded.isEmpty else {
            throw .malformed("reply error body")
        }
        var problems: [Problem] = []
        for entry in coded {
            switch (entry.kind, entry.field) {
            case ("detail", nil): problems.append(.detail(entry.message))
            case ("error", nil): problems.append(.error(entry.message))
            case ("field", let field?) where !field.isEmpty: problems.append(.field(field, entry.message))
            default: throw .malformed("reply error problem \(entry.kind)")
            }
        }
        self.init(status, problems)
    }
}

extension Status {
    /// A refusal or failure: the reply's body is a `ReplyError`, not the client's JSON.
    public var isError: Bool {
        switch self {
        case .ok, .created, .noContent: false
        case .badRequest, .forbidden, .notFound, .unavailable, .internal: true
        }
    }
}

extension Event {
    /// The reply that refuses `command`.
    public static func reply(to command: Command, error: ReplyError) -> Event {
        .reply(to: command, status: error.status, body: error.encode())
    }

    /// The refusal this reply carries; nil for a success.
    public func replyError() throws(WireError) -> ReplyError? {
        status.isError ? try ReplyError(status: status, body: body) : nil
    }
}
