import ChatCore
import ChatTesting
import Foundation

/// Synthetic words ("kavo", "tirumen", ...) from a fixed seed, so message text
/// is varied like language and searches are selective like real ones.
struct Words {
    var state: UInt64
    let vocabulary: [String]

    init(seed: UInt64, size: Int = 5000) {
        state = seed
        var words: [String] = []
        let syllables = ["ka", "vo", "ti", "ru", "men", "sa", "lo", "pe", "dri", "an", "shu", "ker", "mi", "to", "bel", "ar", "zo", "ni", "que", "fa"]
        var x: UInt64 = seed | 1
        for _ in 0..<size {
            var word = ""
            x = x &* 6364136223846793005 &+ 1442695040888963407
            for k in 0..<(2 + Int(x >> 60) % 3) { word += syllables[Int((x >> (8 * UInt64(k))) & 0xFF) % syllables.count] }
            words.append(word)
        }
        vocabulary = words
    }

    mutating func next() -> String {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return vocabulary[Int(state >> 33) % vocabulary.count]
    }

    mutating func sentence(_ count: Int) -> String { (0..<count).map { _ in next() }.joined(separator: " ") }
}

/// Search over `total` messages: seed them (8 rooms × 4 senders over
/// WebSockets), wait until indexed, time searches, then delete the index and
/// time its rebuild from zero.
func searchBench(total: Int) async throws {
    let server = try await TestServer.start(storeWorkers: 1, environment: loadEnvironment)
    defer { server.stop() }
    let tokens = try await (0..<4).asyncMap { try await server.token(sub: "s-\($0)", expiresIn: 86_400) }
    for token in tokens { _ = try await server.request("GET", "/api/chat/rooms/", token: token) }
    let others = (1..<4).map { IDs.userID(forSubject: "s-\($0)") }
    var members: [Member] = []
    let perSender = total / 32
    for r in 0..<8 {
        let created = try await server.request("POST", "/api/chat/rooms/", token: tokens[0], json: ["name": "search \(r)", "participant_ids": others])
        let room = created.object["id"] as! String
        for s in 0..<4 {
            var words = Words(seed: UInt64(r * 4 + s + 1))
            let member = Member(socket: try server.webSocket("/ws/chat/\(room)/", token: tokens[s]), toSend: perSender, expected: perSender * 4, window: 200, tag: "r\(r)s\(s)")
            member.text = { _ in words.sentence(12) }
            members.append(member)
        }
    }
    let seedStart = now()
    try runAll(members)
    print(String(format: "seeded %d messages in %.1f s", perSender * 32, Double(now() - seedStart) / 1e9))

    // The newest message's tag is unique: once it is found, everything is indexed.
    let lastTag = "r7s3 \(perSender - 1) "
    func found(_ query: String) async throws -> Int {
        let q = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        return (try await server.request("GET", "/api/chat/search/messages/?q=\(q)", token: tokens[0]).json as? [Any])?.count ?? 0
    }
    let indexStart = now()
    while try await found(lastTag) == 0 { try await Task.sleep(for: .milliseconds(100)) }
    print(String(format: "live indexing finished %.1f s after the last send", Double(now() - indexStart) / 1e9))

    var words = Words(seed: 99)
    var latencies: [Double] = []
    var hits = 0
    for i in 0..<300 {
        // Whole words, and 3- and 4-character substrings of words.
        let word = words.next()
        let query = i % 3 == 0 ? word : String(word.prefix(3 + i % 2))
        let start = now()
        hits += try await found(query)
        latencies.append(Double(now() - start) / 1e6)
    }
    latencies.sort()
    print(String(format: "search over %d messages: p50 %.2f ms, p99 %.2f ms, max %.2f ms (300 queries, %.1f results on average, 50 at most)",
                 perSender * 32, latencies[150], latencies[296], latencies[299], Double(hits) / 300))

    // Catch-up from zero: the index deleted, the worker woken, the newest message searched for.
    unlink(server.dataDir + "/search.sqlite")
    let rebuildStart = now()
    _ = try await server.request("POST", "/api/chat/rooms/\((try await server.request("GET", "/api/chat/rooms/?page_size=1", token: tokens[0]).object["results"] as? [[String: Any]])?.first?["id"] as? String ?? "")/messages/", token: tokens[0], json: ["content": "wake"])
    while try await found(lastTag) == 0 { try await Task.sleep(for: .milliseconds(100)) }
    let seconds = Double(now() - rebuildStart) / 1e9
    print(String(format: "catch-up from zero: %d messages in %.1f s = %.0f messages/s", perSender * 32, seconds, Double(perSender * 32) / seconds))
    print(String(format: "summary: search over %d messages: p50 %.2f ms, p99 %.2f ms; catch-up from zero %.0f messages/s",
                 perSender * 32, latencies[150], latencies[296], Double(perSender * 32) / seconds))
}
