import Hummingbird
import NIOCore

/// `/api/openapi.json` and `/api/openapi.yaml`: the OpenAPI document
/// (docs/openapi.yaml) built into the binary, open to anyone.
struct OpenAPIRoutes: Sendable {
    let api: ChatAPI

    var routes: [ChatAPI.Route] {
        [
            .init(.get, "/api/openapi.json", .open, { _, _ in Self.response(Self.json, "application/json") }),
            // RFC 9512's media type for YAML.
            .init(.get, "/api/openapi.yaml", .open, { _, _ in Self.response(Self.yaml, "application/yaml") }),
        ]
    }

    static let json = ByteBuffer(string: OpenAPIDocument.json)
    static let yaml = ByteBuffer(string: OpenAPIDocument.yaml)

    static func response(_ body: ByteBuffer, _ contentType: String) -> Response {
        Response(status: .ok, headers: [.contentType: contentType], body: ResponseBody(byteBuffer: body))
    }
}
