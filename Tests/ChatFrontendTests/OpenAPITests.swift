import Foundation
import Testing

@testable import ChatFrontend

/// The router and docs/openapi.yaml agree, and the document the server
/// serves is the one in docs/.
@Suite struct OpenAPI {
    static let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs").standardized

    /// `/rooms/:room/` and `/rooms/{room_id}/` are one path: parameters unnamed.
    static func shape(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix(":") || (segment.hasPrefix("{") && segment.hasSuffix("}")) ? "{}" : String(segment)
        }.joined(separator: "/")
    }

    /// The operations under `paths:` as "METHOD /shape", read by lines: a path
    /// is a two-space-indented key starting with `/`, its methods four-space keys.
    static let methods: Set<String> = ["get", "post", "put", "patch", "delete", "head", "options", "trace"]

    static func documentOperations(_ yaml: String) -> Set<String> {
        var operations: Set<String> = []
        var inPaths = false
        var path: String?
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if !line.isEmpty && !line.hasPrefix(" ") && !line.hasPrefix("#") {
                inPaths = line == "paths:"
                path = nil
            } else if inPaths && line.hasPrefix("  /") && line.hasSuffix(":") {
                path = shape(String(line.dropFirst(2).dropLast()))
            } else if inPaths, let path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"),
                methods.contains(String(line.dropFirst(4).dropLast()))
            {
                operations.insert("\(line.dropFirst(4).dropLast().uppercased()) \(path)")
            }
        }
        return operations
    }

    /// The same from a parsed document's `paths` (a path item's other keys,
    /// such as `parameters`, are not operations).
    static func operations(_ paths: [String: Any]) -> Set<String> {
        Set(paths.flatMap { path, item in
            ((item as? [String: Any]) ?? [:]).keys.filter(methods.contains).map { "\($0.uppercased()) \(shape(path))" }
        })
    }

    static func yamlFile() throws -> String {
        try String(contentsOf: docs.appendingPathComponent("openapi.yaml"), encoding: .utf8)
    }

    @Test func everyRouteIsDocumentedAndEveryOperationRouted() async throws {
        let documented = Self.documentOperations(try Self.yamlFile())
        #expect(documented.count >= 26, "read \(documented.count) operations from docs/openapi.yaml: has its layout changed?")
        try await InProcessServer.run { server in
            // HEAD is served wherever GET is (ChatAPI.buildRouter): documented with GET.
            let routed = Set(ChatAPI(services: server.services).routes.map { "\($0.method.rawValue) \(Self.shape($0.path))" })
            #expect(routed.subtracting(documented).sorted() == [], "routes not in docs/openapi.yaml")
            #expect(documented.subtracting(routed).sorted() == [], "operations the server does not route")
        }
    }

    @Test func theLineReaderSeesWhatAParserSees() throws {
        // docs/openapi.json is what PyYAML parsed (docs/openapi-json.py).
        let parsed = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.docs.appendingPathComponent("openapi.json")))
        let paths = try #require((parsed as? [String: Any])?["paths"] as? [String: Any])
        #expect(Self.operations(paths) == Self.documentOperations(try Self.yamlFile()))
    }

    @Test func theBuiltInDocumentIsTheOneInDocs() throws {
        #expect(OpenAPIDocument.yaml == (try Self.yamlFile()), "run docs/openapi-json.py")
        let json = try String(contentsOf: Self.docs.appendingPathComponent("openapi.json"), encoding: .utf8)
        #expect(OpenAPIDocument.json == json, "run docs/openapi-json.py")
    }

    @Test func servedAsJSONAndYAMLWithoutAToken() async throws {
        let yaml = try Self.yamlFile()
        try await InProcessServer.run { server in
            let json = try await server.request("GET", "/api/openapi.json")
            #expect(json.status == 200)
            #expect(json.headers["content-type"] == "application/json")
            let document = json.object
            #expect((document["openapi"] as? String)?.hasPrefix("3.1.") == true)
            #expect(Self.operations(document["paths"] as? [String: Any] ?? [:]) == Self.documentOperations(yaml))
            #expect(try await server.request("HEAD", "/api/openapi.json").status == 200)

            let served = try await server.request("GET", "/api/openapi.yaml")
            #expect(served.status == 200)
            #expect(served.headers["content-type"] == "application/yaml")
            #expect(served.text == yaml)
        }
    }
}
