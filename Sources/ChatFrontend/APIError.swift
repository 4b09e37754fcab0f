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
        Response.json(status, body)
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
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return Response.json(error.status, error.body)
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
