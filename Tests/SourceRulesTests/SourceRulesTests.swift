import Foundation
import Testing

/// Rules about the code itself that review alone did not keep (issue 11):
/// the processes with races stay readable in short functions, and the bus
/// protocol has one home. They read the sources, so they fail the build's
/// tests the moment a change breaks them rather than at the next review.
@Suite struct SourceRulesTests {
    /// The repository's root, from this file's place in it.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func swiftFiles(under directory: String) -> [(path: String, lines: [Substring])] {
        let base = root.appendingPathComponent(directory)
        guard let walker = FileManager.default.enumerator(atPath: base.path) else { return [] }
        return walker.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }.sorted().compactMap { relative in
            guard let text = try? String(contentsOf: base.appendingPathComponent(relative), encoding: .utf8) else { return nil }
            return ("\(directory)/\(relative)", text.split(separator: "\n", omittingEmptySubsequences: false))
        }
    }

    /// No function (or initialiser) in the bus or the supervisor runs past
    /// 80 lines: their logic lives in state machines with small steps.
    @Test(arguments: ["Sources/ChatBus", "Sources/ChatSupervisor"])
    func functionsAreShort(directory: String) {
        let files = Self.swiftFiles(under: directory)
        #expect(!files.isEmpty, "no sources under \(directory)")
        for file in files {
            for function in SwiftOutline.functions(in: file.lines) where function.lines > 80 {
                Issue.record("\(file.path):\(function.line): \(function.name) is \(function.lines) lines (at most 80)")
            }
        }
    }

    /// Strings of the bus protocol (topics, event keys, heartbeat and queue
    /// reports, worker names) are built and parsed only in ChatWire.
    @Test func wireStringsLiveInChatWire() throws {
        let forbidden = try [
            // Event-key prefixes and topic prefixes.
            #""(m|s|x|k):"#, #""k:\*""#, #""(hb|room|reply|ctl|nudge|sync)\.""#,
            // Worker names and queue names spelled by hand.
            #""(store|receipts|search|files)[.-](\d|\\\()"#, #""store-""#,
            // Frontend slots (`FrontendSlot`), in sd_notify and sessions.
            #""frontend\.(\d|\\\()"#,
            // The children's report of their queues, a frontend's of its WebSockets.
            #"CHATD_QUEUES"#, #"CHATD_WEBSOCKETS"#, #"CHATD_METRICS"#,
        ].map { try Regex($0) }
        let checked = ["ChatBus", "ChatCore", "ChatConfig", "ChatFrontend", "ChatMetrics", "ChatStore", "ChatSupervisor", "ChatWorkers", "chatd"]
        for directory in checked.map({ "Sources/\($0)" }) {
            let files = Self.swiftFiles(under: directory)
            #expect(!files.isEmpty, "no sources under \(directory)")
            for file in files {
                for (number, line) in file.lines.enumerated() {
                    let code = SwiftOutline.code(of: line)
                    for pattern in forbidden where code.contains(pattern) {
                        Issue.record("\(file.path):\(number + 1): wire string outside ChatWire: \(line.trimmingCharacters(in: .whitespaces))")
                    }
                }
            }
        }
    }

    /// The outline finder itself: a rule that cannot fail proves nothing.
    @Test func outlineMeasuresFunctions() {
        let source = """
            struct S {
                func short() { x() }
                /// doc { not a brace
                func long(_ a: Int) -> Int {
                    let s = "}}}" // }
                    if a > 0 {
                        return 1
                    }
                    return 0
                }
                init?(x: Int) {
                    return nil
                }
            }
            """
        let functions = SwiftOutline.functions(in: source.split(separator: "\n", omittingEmptySubsequences: false))
        #expect(functions.map(\.name) == ["short", "long", "init"])
        #expect(functions.map(\.lines) == [1, 7, 3])
        #expect(SwiftOutline.code(of: #"let a = "m:" + b // "x:""#) == #"let a = "m:" + b "#)
    }
}

/// Just enough of Swift's lexical structure to find where functions begin
/// and end: braces outside string literals and comments.
enum SwiftOutline {
    struct Function: Equatable {
        var name: String
        var line: Int
        var lines: Int
    }

    static var declaration: Regex<AnyRegexOutput> { try! Regex(#"^\s*(?:@\w+\s+)*(?:(?:public|private|fileprivate|internal|package|static|class|final|override|mutating|nonisolated|convenience|required|@\w+)\s+)*(?:func\s+([^\s(<]+)|(init)[?!]?\s*[(<]|(deinit)\b)"#) }

    static func functions(in lines: [Substring]) -> [Function] {
        let declaration = Self.declaration
        var found: [Function] = []
        var index = 0
        while index < lines.count {
            guard let match = try? declaration.firstMatch(in: String(lines[index])) else {
                index += 1
                continue
            }
            let name = (match.output[1].substring ?? match.output[2].substring ?? match.output[3].substring).map(String.init) ?? "?"
            var depth = 0
            var opened = false
            var end = index
            scan: for line in index..<lines.count {
                for character in code(of: lines[line]) {
                    if character == "{" { depth += 1; opened = true }
                    if character == "}" { depth -= 1 }
                    if opened && depth == 0 { end = line; break scan }
                }
                // A requirement in a protocol has no body: no brace soon after its declaration.
                if !opened && line >= index + 5 { break scan }
            }
            found.append(Function(name: name, line: index + 1, lines: opened ? end - index + 1 : 1))
            // Nested functions are measured as part of the one that holds them.
            index = opened ? end + 1 : index + 1
        }
        return found
    }

    /// A line without its comment and with string literals' contents kept
    /// but their braces removed (so `"}"` does not close a scope); good
    /// enough for single-line literals, which is what the sources use.
    static func code(of line: Substring) -> String {
        var result = ""
        var inString = false
        var previous: Character = " "
        var characters = line.makeIterator()
        while let character = characters.next() {
            if !inString && character == "/" && previous == "/" {
                result.removeLast()
                break
            }
            if character == "\"" && previous != "\\" { inString.toggle() }
            if inString && (character == "{" || character == "}") {
                previous = character
                continue
            }
            result.append(character)
            previous = character
        }
        return result
    }
}
