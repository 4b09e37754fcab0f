import ChatCore
import Foundation
import Hummingbird

/// What a group of routes asks of a request before its handler runs.
enum RouteAccess: Hashable, Sendable {
    /// Anyone (`/healthz`).
    case open
    /// A verified caller; a body, if any, is JSON.
    case json
    /// A verified caller; a body, if any, is JSON or `multipart/form-data` (message create).
    case jsonOrMultipart
}

/// Verifies the bearer token of every request to the routes behind it and
/// puts the caller in the context; then applies the caller's rate limit; then,
/// as DRF parses after it authenticates, refuses with `415` a body of a type
/// the route does not take, whether or not the route reads a body.
struct AuthenticatorMiddleware: RouterMiddleware {
    typealias Context = ChatRequestContext
    let services: FrontendServices
    let multipart: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.caller = try await authenticate(request)
        try Self.refuseNUL(in: request)
        return try await next(request, context)
    }

    func authenticate(_ request: Request) async throws -> Caller {
        let caller: Caller
        do {
            let token = try Authenticator.bearerToken(values: request.headers[values: .authorization])
            if request.headers[.authorization] != nil && token == nil {
                throw APIError(.unauthorized, detail: "Authorization header must use the Bearer scheme.")
            }
            let verified = try await services.auth.verify(token: token)
            caller = Caller(identity: verified.identity, json: verified.identityJSON)
        } catch let failure as Authenticator.Failure {
            throw APIError(.unauthorized, detail: failure.detail)
        }
        if let limiter = services.limiter, let wait = limiter.request(user: caller.identity.id).retryAfterSeconds {
            var error = APIError(.tooManyRequests, detail: "Request was throttled. Expected available in \(wait) seconds.")
            error.headers[.retryAfter] = String(wait)
            throw error
        }
        if Self.hasBody(request) {
            let contentType = request.headers[.contentType] ?? ""
            let media = Self.mediaType(contentType)
            guard media == "application/json" || (multipart && media == "multipart/form-data") else {
                throw APIError(.unsupportedMediaType, detail: "Unsupported media type \"\(contentType.prefix(200))\" in request.")
            }
        }
        return caller
    }

    /// A NUL in a query parameter (`?room_type=%00`) is refused here, for
    /// every route and on both engines alike: PostgreSQL would fail the
    /// statement (22021), and with it the read batch of other users' requests.
    static func refuseNUL(in request: Request) throws {
        guard let query = request.uri.query, query.contains("%00") else { return }
        let items = QueryString.parse(query[...])
        if items.contains(where: { Validation.hasNUL($0.key) || Validation.hasNUL($0.value) }) {
            throw APIError(.badRequest, detail: "Query parameters must not contain NUL characters.")
        }
    }

    /// Whether a request announces a body (RFC 9112 6.3): a positive length, or a transfer coding.
    static func hasBody(_ request: Request) -> Bool {
        if let length = request.headers[.contentLength] { return length != "0" }
        return request.headers[.transferEncoding] != nil
    }

    /// The media type of a `Content-Type` value, lowercased, without parameters.
    static func mediaType(_ contentType: String) -> String {
        contentType.split(separator: ";", omittingEmptySubsequences: false).first?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
    }
}
