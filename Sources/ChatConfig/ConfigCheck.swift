import Configuration
import Foundation
import Synchronization

/// Watches a load: every key `load` reads, where each value came from, and
/// the values no provider could give as the type asked. The keys `load`
/// reads are the known keys, so there is no second list to keep in step.
final class KeyRecorder: AccessReporter {
    struct Failure {
        var key: String
        var provider: String
        var type: ConfigType
    }

    private struct State {
        var read: Set<String> = []
        var source: [String: String] = [:]
        var failures: [Failure] = []
    }

    private let state = Mutex(State())

    func report(_ event: AccessEvent) {
        let key = event.metadata.key.components.joined(separator: ".")
        state.withLock { state in
            state.read.insert(key)
            for result in event.providerResults {
                switch result.result {
                case .failure:
                    state.failures.append(Failure(key: key, provider: result.providerName, type: event.metadata.valueType))
                case .success(let lookup) where lookup.value != nil && state.source[key] == nil:
                    state.source[key] = result.providerName
                case .success:
                    break
                }
            }
            if event.conversionError != nil, let provider = state.source[key] {
                state.failures.append(Failure(key: key, provider: provider, type: event.metadata.valueType))
            }
        }
    }

    var read: Set<String> { state.withLock { $0.read } }
    var failures: [Failure] { state.withLock { $0.failures } }
    func source(of key: String) -> String? { state.withLock { $0.source[key] } }
}

/// The leaf keys of a YAML file as it is parsed (`chat.listen`): the parser
/// asks its secrets specifier about every one, which is the only place the
/// library shows them.
final class FileKeys: Sendable {
    private let keys = Mutex<[String]>([])

    var specifier: SecretsSpecifier<String, Void> {
        .dynamic { key, _ in
            self.keys.withLock { $0.append(key) }
            return false
        }
    }

    var all: [String] { keys.withLock { $0 } }
}

extension ChatConfig {
    /// The `CHAT_*` variable for a key (`chat.maxMessageChars` →
    /// `CHAT_MAX_MESSAGE_CHARS`), as the environment provider encodes it.
    static func environmentName(_ key: String) -> String {
        key.split(separator: ".").map { component in
            var out = ""
            var previous: Character?
            for char in component {
                if let previous, previous.isLowercase, char.isUppercase { out.append("_") }
                out.append(char)
                previous = char
            }
            return out.uppercased()
        }.joined(separator: "_")
    }

    /// Where a key's value came from, as an operator would look for it.
    static func describeSource(_ provider: String?, key: String, file: String?, environment: [String: String]) -> String {
        guard let provider else { return String(key.dropFirst(5)) }
        if provider.hasPrefix("FileProvider"), let file { return "\(file): \(key.dropFirst(5))" }
        let name = environmentName(key)
        return "\(name)=\(environment[name] ?? "")"
    }

    /// Refuses what the recorder saw: a value not of its key's type, then a
    /// key in the file that `load` never read.
    static func check(_ recorder: KeyRecorder, fileKeys: [String], file: String?, environment: [String: String]) throws {
        if let failure = recorder.failures.first {
            let expected: String
            switch failure.type {
            case .int: expected = "a whole number"
            case .double: expected = "a number"
            case .bool: expected = "true or false"
            default: expected = "a \(failure.type.rawValue)"
            }
            throw ConfigError.at(describeSource(failure.provider, key: failure.key, file: file, environment: environment), "must be \(expected)")
        }
        let known = recorder.read
        for key in fileKeys where !known.contains(key) {
            let relative = key.hasPrefix("chat.") ? String(key.dropFirst(5)) : key
            var hint = ""
            if !key.hasPrefix("chat.") {
                hint = known.contains("chat.\(key)") ? " (settings go under chat:; did you mean chat.\(key)?)" : " (settings go under chat:)"
            } else if let near = nearest(relative, among: known.map { String($0.dropFirst(5)) }) {
                hint = " (did you mean \(near)?)"
            }
            throw ConfigError.at("\(file ?? "config"): \(relative)", "unknown key\(hint)")
        }
    }

    /// The known key closest to a mistyped one, if it is close enough to be
    /// the one meant: at most a third of its letters wrong (two at least).
    static func nearest(_ key: String, among known: [String]) -> String? {
        let scored = known.map { ($0, editDistance(key.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 || $0.1 == $1.1 && $0.0 < $1.0 }) else { return nil }
        return best.1 <= max(2, key.count / 3) ? best.0 : nil
    }

    /// Levenshtein distance, with a swap of two neighbours counted as one edit.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }
}
