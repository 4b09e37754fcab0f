import ChatBus
import ChatCore
import ChatWire
import Hummingbird
import NIOCore

/// A client-facing error: a status and a DRF-style JSON body. The only place
/// bus outcomes become HTTP statuses.
public struct APIError: Error, HTTPResponseError {
    public let status: HTTPResponse.Status
    public let body: [UInt8]
    /// Extra response headers (`Retry-After`).
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, body: [UInt8]) {
        self.status = status
        self.body = body
    }

    public init(_ status: HTTPResponse.Status, detail: String) {
        self.init(status, body: ClientJSON.detail(detail))
    }

    public static func fields(_ errors: [(field: String, message: String)]) -> APIError {
        APIError(.badRequest, body: ClientJSON.fieldErrors(errors))
    }

    public static let unavailable = APIError(.serviceUnavailable, detail: "Service temporarily unavailable, try again.")

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = Response.json(status, body)
        response.headers.append(contentsOf: headers)
        return response
    }

    /// The REST response for a worker's reply. Every handler that answers
    /// with a reply goes through here, so how replies render is decided once.
    static func response(reply: Event) -> Response {
        Response.json(httpStatus(reply.status), reply.body)
    }

    static func httpStatus(_ status: Status) -> HTTPResponse.Status {
        switch status {
        case .ok: .ok
        case .created: .created
        case .noContent: .noContent
        case .badRequest: .badRequest
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .unavailable: .serviceUnavailable
        case .internal: .internalServerError
        }
    }
}

extension Response {
    static func json(_ status: HTTPResponse.Status, _ body: [UInt8]) -> Response {
        if status == .noContent { return Response(status: .noContent) }
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body))
        )
    }
}

/// Turns errors from handlers and Hummingbird itself into JSON bodies, so no
/// 4xx leaves without one (api-contract.md "Statuses").
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let allowed: AllowedMethods

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && context.coreContext.endpointPath.value == "NotFound" {
            // No route: a path chatd serves with other methods is 405 (RFC 9110 15.5.6).
            let methods = allowed.methods(for: request.uri.path)
            guard !methods.isEmpty else { return Response.json(.notFound, ClientJSON.detail("Not found.")) }
            var response = Response.json(.methodNotAllowed, ClientJSON.detail("Method \"\(request.method.rawValue.prefix(32))\" not allowed."))
            response.headers[.allow] = methods.joined(separator: ", ")
            return response
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as HTTPError {
            let detail: String
            switch error.status {
            case .notFound: detail = "Not found."
            case .methodNotAllowed: detail = "Method \"\(request.method.rawValue)\" not allowed."
            case .contentTooLarge: detail = "Request body too large."
            default: detail = error.body ?? error.status.reasonPhrase
            }
            return Response.json(error.status, ClientJSON.detail(detail))
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(error)"])
            return Response.json(.internalServerError, ClientJSON.detail("A server error occurred."))
        }
    }
}

/// Which methods each route pattern takes (`:name` segments match any one
/// segment), for the `Allow` header of a `405`.
struct AllowedMethods: Sendable {
    private let routes: [(pattern: [Substring], method: String)]

    init(_ routes: [(HTTPRequest.Method, String)]) {
        self.routes = routes.map { (Self.segments($0.1), $0.0.rawValue) }
    }

    /// The methods of every route whose pattern matches `path`, in a stable order; empty when none does.
    func methods(for path: String) -> [String] {
        let segments = Self.segments(path)
        var found: [String] = []
        for route in routes where route.pattern.count == segments.count && !found.contains(route.method) {
            if zip(route.pattern, segments).allSatisfy({ $0.hasPrefix(":") ? !$1.isEmpty : $0 == $1 }) { found.append(route.method) }
        }
        return found.sorted()
    }

    /// Split on `/`, keeping empty segments: `/rooms/` and `/rooms` differ.
    private static func segments(_ path: String) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: false)
    }
}
