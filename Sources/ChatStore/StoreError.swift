import ChatCore

/// A refusal from the store: a code and what to tell the client, typed, so
/// that the workers hand it on without encoding client JSON.
public struct StoreError: Error, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        case badRequest, forbidden, notFound
    }

    /// One thing wrong, in DRF's terms.
    public enum Problem: Sendable, Equatable {
        /// `{"detail": message}`.
        case detail(String)
        /// `{"error": message}`, the seed's body for refused actions.
        case error(String)
        /// `{"<field>": [message]}`.
        case field(String, String)
    }

    public let code: Code
    public let problems: [Problem]

    public init(code: Code, problems: [Problem]) {
        self.code = code
        self.problems = problems
    }

    public init(code: Code, detail: String) {
        self.init(code: code, problems: [.detail(detail)])
    }

    public static func badRequest(_ errors: [(field: String, message: String)]) -> StoreError {
        StoreError(code: .badRequest, problems: errors.map { .field($0.field, $0.message) })
    }

    public static func badRequest(error: String) -> StoreError {
        StoreError(code: .badRequest, problems: [.error(error)])
    }

    public static func forbidden(_ detail: String = "You don't have access to this room") -> StoreError {
        StoreError(code: .forbidden, detail: detail)
    }

    public static func notFound(_ detail: String = "Not found.") -> StoreError {
        StoreError(code: .notFound, detail: detail)
    }

    public static let invalidPage = notFound("Invalid page.")
}
