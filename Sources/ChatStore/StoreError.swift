import ChatCore

/// A refusal from the store, carrying the client-facing error body.
public struct StoreError: Error, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        case badRequest, forbidden, notFound
    }

    public let code: Code
    /// DRF-style body: `{"detail": ...}` or field errors.
    public let body: [UInt8]

    public init(code: Code, body: [UInt8]) {
        self.code = code
        self.body = body
    }

    public static func badRequest(_ errors: [(field: String, message: String)]) -> StoreError {
        StoreError(code: .badRequest, body: ClientJSON.fieldErrors(errors))
    }

    /// `{"error": ...}`, the seed's body for refused actions.
    public static func badRequest(error: String) -> StoreError {
        var w = JSONWriter(capacity: 64)
        w.beginObject()
        w.field("error", error)
        w.endObject()
        return StoreError(code: .badRequest, body: w.bytes)
    }

    public static func forbidden(_ detail: String = "You don't have access to this room") -> StoreError {
        StoreError(code: .forbidden, body: ClientJSON.detail(detail))
    }

    public static func notFound(_ detail: String = "Not found.") -> StoreError {
        StoreError(code: .notFound, body: ClientJSON.detail(detail))
    }

    public static let invalidPage = notFound("Invalid page.")
}
