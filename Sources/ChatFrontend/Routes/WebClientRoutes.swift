import ChatWire
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `/` and `/app/<file>`: the browser client (web/, built into the binary as
/// `WebAssets`), open to anyone, none of it when `webClient` is off.
/// `/app/` cannot clash with `/api/` or `/ws/`.
struct WebClientRoutes: Sendable {
    let api: ChatAPI

    var routes: [ChatAPI.Route] {
        guard api.services.config.chat.webClient else { return [] }
        return [
            .init(.get, "/", .open, { request, _ in try Self.serve("index.html", request) }),
            .init(.get, "/app/:file", .open, { request, context in
                try Self.serve(context.parameters.get("file") ?? "", request)
            }),
        ]
    }

    /// One file of the client.
    struct Asset: Sendable {
        var body: ByteBuffer
        var contentType: String
        /// A strong validator: a 64-bit FNV-1a of the bytes (the files are
        /// fixed in the binary, so it only changes with an upgrade).
        var etag: String
    }

    static let assets: [String: Asset] = Dictionary(uniqueKeysWithValues: WebAssets.files.map { file in
        (file.name, Asset(body: ByteBuffer(string: file.text), contentType: contentType(file.name), etag: etag(Array(file.text.utf8))))
    })

    static func contentType(_ name: String) -> String {
        if name.hasSuffix(".html") { return "text/html; charset=utf-8" }
        // RFC 9239: JavaScript is text/javascript.
        if name.hasSuffix(".js") { return "text/javascript; charset=utf-8" }
        if name.hasSuffix(".css") { return "text/css; charset=utf-8" }
        return "application/octet-stream"
    }

    static func etag(_ bytes: [UInt8]) -> String {
        let hex = String(FNV1a.hash(bytes), radix: 16)
        return "\"" + String(repeating: "0", count: 16 - hex.count) + hex + "\""
    }

    static func serve(_ name: String, _ request: Request) throws -> Response {
        // index.html only at `/`: one URL per page, so relative links resolve one way.
        guard let asset = assets[name], name != "index.html" || request.uri.path == "/" else {
            throw APIError(.notFound, detail: "Not found.")
        }
        var headers: HTTPFields = [
            .contentType: asset.contentType,
            // Revalidated on every use, so an upgraded server's client is picked up at once.
            .cacheControl: "no-cache",
            .eTag: asset.etag,
            HTTPField.Name("Content-Security-Policy")!: policy(host: request.head.authority),
        ]
        let matches = request.headers[values: .ifNoneMatch].flatMap { $0.split(separator: ",") }
            .contains { tag in let tag = tag.trimmingCharacters(in: .whitespaces); return tag == asset.etag || tag == "*" || tag == "W/" + asset.etag }
        if matches {
            headers[.contentType] = nil
            return Response(status: .notModified, headers: headers)
        }
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: asset.body))
    }

    /// Nothing but this server's own files, and its WebSockets: `'self'`
    /// covers ws:/wss: of the same host in CSP 3, the explicit sources in
    /// browsers that predate it. The Host is named only when it is a plain
    /// `host[:port]`, so a header cannot add sources or directives.
    static func policy(host: String?) -> String {
        var connect = "'self'"
        if let host, !host.isEmpty, host.utf8.count <= 255,
            host.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.hostCharacters.contains($0)) })
        {
            connect += " ws://\(host) wss://\(host)"
        }
        return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src \(connect); "
            + "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    }
}

extension CharacterSet {
    /// Letters, digits, `.`, `-`, `:` and brackets: a host name, IPv4 or [IPv6] with a port.
    fileprivate static let hostCharacters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
}
