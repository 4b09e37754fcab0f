import ChatConfig
import Foundation
import Testing

@testable import ChatFrontend

/// The browser client's routes: `/` and `/app/<file>` serve web/ as built
/// into the binary, open, typed, revalidated and under a strict policy; off
/// with `webClient: false`.
@Suite struct WebClient {
    static let web = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../web").standardized

    @Test func theBuiltInFilesAreWebByteForByte() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.web.path)
            .filter { $0.hasSuffix(".html") || $0.hasSuffix(".js") || $0.hasSuffix(".css") }.sorted()
        #expect(WebAssets.files.map(\.name) == names, "run web/embed.py")
        for file in WebAssets.files {
            let onDisk = try String(contentsOf: Self.web.appendingPathComponent(file.name), encoding: .utf8)
            #expect(file.text == onDisk, "web/\(file.name) changed: run web/embed.py")
        }
        // docs/openapi.yaml names the files /app/ serves.
        let served = names.filter { $0 != "index.html" }.joined(separator: ", ")
        #expect(try OpenAPI.yamlFile().contains("schema: {type: string, enum: [\(served)]}"), "the file enum of /app/{file} in docs/openapi.yaml")
    }

    @Test func thePageAndItsFilesAreServedOpenWithTypesCachingAndPolicy() async throws {
        try await InProcessServer.run { server in
            let page = try await server.request("GET", "/")
            #expect(page.status == 200)
            #expect(page.headers["content-type"] == "text/html; charset=utf-8")
            #expect(page.text.contains(#"<script type="module" src="/app/app.js"></script>"#))
            #expect(page.headers["cache-control"] == "no-cache")
            let policy = try #require(page.headers["content-security-policy"])
            #expect(policy.hasPrefix("default-src 'none'; script-src 'self'; style-src 'self';"))
            #expect(policy.contains("connect-src 'self'"))
            #expect(policy.contains("frame-ancestors 'none'"))

            // Every file the page and its modules name is there, with its type.
            let types = ["app.js": "text/javascript", "api.js": "text/javascript", "socket.js": "text/javascript",
                         "view.js": "text/javascript", "sha1.js": "text/javascript", "call.js": "text/javascript",
                         "e2e.js": "text/javascript", "style.css": "text/css"]
            for (name, type) in types {
                let file = try await server.request("GET", "/app/\(name)")
                #expect(file.status == 200, "\(name)")
                #expect(file.headers["content-type"] == "\(type); charset=utf-8", "\(name)")
                #expect(file.text == WebAssets.files.first { $0.name == name }?.text, "\(name)")
                #expect(file.headers["content-security-policy"] != nil, "\(name)")
                // The server's encoder leaves HEAD's body out; the router answers as for GET.
                let head = try await server.request("HEAD", "/app/\(name)")
                #expect(head.status == 200 && head.headers["etag"] == file.headers["etag"], "\(name)")
            }

            // Revalidation: the same tag is 304 without a body, another tag the file.
            let etag = try #require(page.headers["etag"])
            let unchanged = try await server.request("GET", "/", headers: ["If-None-Match": etag])
            #expect(unchanged.status == 304)
            #expect(unchanged.body.isEmpty)
            #expect(unchanged.headers["etag"] == etag)
            #expect(try await server.request("GET", "/", headers: ["If-None-Match": #""0000000000000000""#]).status == 200)
            // If-None-Match compares weakly (RFC 9110 13.1.2): the W/ form, `*`, and a list holding the tag match.
            for header in ["W/\(etag)", "*", #""0000000000000000", "# + etag, #"W/"0000000000000000",W/"# + etag] {
                let answer = try await server.request("GET", "/", headers: ["If-None-Match": header])
                #expect(answer.status == 304 && answer.body.isEmpty, "\(header)")
            }
            for header in [#"W/"0000000000000000""#, #""0000000000000000", W/"1111111111111111""#, "", etag.dropLast(2) + "\""] {
                #expect(try await server.request("GET", "/", headers: ["If-None-Match": String(header)]).status == 200, "\(header)")
            }

            // Unknown files, the page under another name, and other methods.
            for path in ["/app/nothing.js", "/app/index.html", "/app/", "/app/embed.py", "/index.html"] {
                let missing = try await server.request("GET", path)
                #expect(missing.status == 404, "\(path)")
                #expect(missing.object["detail"] as? String == "Not found.", "\(path)")
            }
            let post = try await server.request("POST", "/")
            #expect(post.status == 405)
            #expect(post.headers["allow"] == "GET, HEAD")
        }
    }

    @Test func offItIsNotThere() async throws {
        try await InProcessServer.run(configure: { $0.webClient = false }) { server in
            let page = try await server.request("GET", "/")
            #expect(page.status == 404)
            #expect(page.object["detail"] as? String == "Not found.")
            #expect(try await server.request("GET", "/app/app.js").status == 404)
            #expect(try await server.request("GET", "/healthz").status == 200)
        }
    }

    @Test func theConfigurationKeyAndVariableTurnItOff() async throws {
        #expect(try await ChatConfig.load(file: nil, environment: [:]).webClient)
        #expect(try await !ChatConfig.load(file: nil, environment: ["CHAT_WEB_CLIENT": "false"]).webClient)
        // The key as etc/chatd.yaml spells it, under `chat:`.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-web-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "chat:\n  webClient: false\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try await !ChatConfig.load(file: path, environment: [:]).webClient)
        try "chat:\n  webClient: true\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try await ChatConfig.load(file: path, environment: [:]).webClient)
    }

    @Test func thePolicyNamesOnlyAPlainHost() {
        #expect(WebClientRoutes.policy(host: "chat.example.com:8443").contains("connect-src 'self' ws://chat.example.com:8443 wss://chat.example.com:8443;"))
        #expect(WebClientRoutes.policy(host: "[::1]:8000").contains("ws://[::1]:8000 "))
        for hostile in ["a; script-src *", "a b", "a'", "", nil] as [String?] {
            #expect(WebClientRoutes.policy(host: hostile).contains("connect-src 'self'; "), "\(String(describing: hostile))")
        }
    }
}
