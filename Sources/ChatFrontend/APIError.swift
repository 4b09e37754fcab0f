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

extension APIError {
    /// The REST response to a worker's reply: a success's body as the worker
    /// encoded it, a refusal (`ReplyError`) rendered as DRF JSON. Every REST
    /// handler answers a reply through here.
    static func response(reply: Event) -> Response {
        let (status, body) = rendered(reply)
        return Response.json(status, body)
    }

    /// Status and body of a reply for a client; also what a refused WebSocket handshake answers.
    static func rendered(_ reply: Event) -> (HTTPResponse.Status, [UInt8]) {
        do {
            guard let error = try reply.replyError() else { return (httpStatus(reply.status), reply.body) }
            return (httpStatus(error.status), drfBody(error))
        } catch {
            // A worker of another version: nothing the client could act on.
            return (.internalServerError, ClientJSON.detail("A server error occurred."))
        }
    }

    /// DRF's shapes, in the problems' order: `{"detail": ...}`, the seed's
    /// `{"error": ...}`, `{"field": ["message"]}` for each field error.
    static func drfBody(_ error: ReplyError) -> [UInt8] {
        var w = JSONWriter(capacity: 64)
        w.beginObject()
        for problem in error.problems {
            switch problem {
            case .detail(let message): w.field("detail", message)
            case .error(let message): w.field("error", message)
            case .field(let field, let message):
                w.key(field)
                w.beginArray()
                w.string(message)
                w.endArray()
            }
        }
        w.endObject()
        return w.bytes
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

/// Which methods the route a path resolves to takes, for the `Allow` header
/// of a `405`. Resolves as Hummingbird's trie does, so that the methods named
/// are the ones that answer: empty segments are skipped, a literal segment is
/// tried before a `:name` one, and a path that reaches a node whose routes
/// lack the method is not retried elsewhere (`GET /rooms/direct_message/`
/// ends at the literal `direct_message`, which takes POST only, not at
/// `/rooms/:room/`).
struct AllowedMethods: Sendable {
    private let routes: [(pattern: [Substring], method: String)]

    init(_ routes: [(HTTPRequest.Method, String)]) {
        self.routes = routes.map { (Self.segments($0.1), $0.0.rawValue) }
    }

    /// The methods of the routes `path` resolves to, sorted; empty when it resolves to none.
    func methods(for path: String) -> [String] {
        resolve(Self.segments(path), depth: 0, candidates: Array(routes.indices)) ?? []
    }

    /// Depth first, literal children before parameters, as `RouterTrie.resolve`:
    /// nil when no branch reaches the path's end, else the methods there.
    private func resolve(_ segments: [Substring], depth: Int, candidates: [Int]) -> [String]? {
        if depth == segments.count {
            let methods = candidates.filter { routes[$0].pattern.count == depth }.map { routes[$0].method }
            return Set(methods).sorted()
        }
        let deeper = candidates.filter { routes[$0].pattern.count > depth }
        let literal = deeper.filter { routes[$0].pattern[depth] == segments[depth] && !Self.isParameter(routes[$0].pattern[depth]) }
        if !literal.isEmpty, let found = resolve(segments, depth: depth + 1, candidates: literal) { return found }
        let parameter = deeper.filter { Self.isParameter(routes[$0].pattern[depth]) }
        if !parameter.isEmpty, let found = resolve(segments, depth: depth + 1, candidates: parameter) { return found }
        return nil
    }

    private static func isParameter(_ segment: Substring) -> Bool { segment.hasPrefix(":") }

    /// Split on `/`, empty segments left out, as the router does.
    private static func segments(_ path: String) -> [Substring] {
        path.split(separator: "/")
    }
}
