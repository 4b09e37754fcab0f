/// A Prometheus text exposition (format 0.0.4) as families of samples: read
/// from each process's text, relabelled and merged into one document by the
/// supervisor, and read back by tests. Lenient: a line it cannot read is
/// skipped, so one process's bad line costs only that line.
public struct Exposition: Sendable, Equatable {
    public struct Label: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public struct Sample: Sendable, Equatable {
        /// With a histogram's suffix (`_bucket`, `_sum`, `_count`).
        public var name: String
        public var labels: [Label]
        /// As written: rendering gives back the same bytes.
        public var value: String
        public var number: Double? {
            switch value {
            case "+Inf": .infinity
            case "-Inf": -.infinity
            default: Double(value)
            }
        }
        public func label(_ name: String) -> String? { labels.first { $0.name == name }?.value }
        public init(name: String, labels: [Label], value: String) {
            self.name = name
            self.labels = labels
            self.value = value
        }
    }

    public struct Family: Sendable, Equatable {
        public var name: String
        /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
        public var type: String
        public var samples: [Sample]
        public init(name: String, type: String, samples: [Sample]) {
            self.name = name
            self.type = type
            self.samples = samples
        }
    }

    /// By name, each name once.
    public private(set) var families: [Family] = []

    public init() {}

    public init(parsing text: String) {
        var current: Family?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let words = line.split(separator: " ")
                guard words.count == 4 else { continue }
                if let current { add(current) }
                current = Family(name: String(words[2]), type: String(words[3]), samples: [])
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let sample = Self.sample(line) else { continue }
            if let family = current, Self.belongs(sample.name, to: family) {
                current?.samples.append(sample)
            } else {
                if let current { add(current) }
                current = nil
                add(Family(name: sample.name, type: "untyped", samples: [sample]))
            }
        }
        if let current { add(current) }
    }

    /// `name` is the family's, or a histogram's or summary's part of it.
    static func belongs(_ name: String, to family: Family) -> Bool {
        if name == family.name { return true }
        guard name.hasPrefix(family.name) else { return false }
        let suffix = name.dropFirst(family.name.count)
        return suffix == "_bucket" || suffix == "_sum" || suffix == "_count"
    }

    /// Adds `family`'s samples to the family of its name (made if new).
    /// `extra` labels go first on each sample, except one it already has.
    public mutating func add(_ family: Family, labelledWith extra: [Label] = []) {
        var family = family
        if !extra.isEmpty {
            for i in family.samples.indices {
                let own = family.samples[i].labels
                family.samples[i].labels = extra.filter { label in !own.contains { $0.name == label.name } } + own
            }
        }
        if let i = families.firstIndex(where: { $0.name == family.name }) {
            families[i].samples += family.samples
        } else {
            let at = families.firstIndex { $0.name > family.name } ?? families.endIndex
            families.insert(family, at: at)
        }
    }

    /// Every family of `other`, labelled with `extra` (`add(_:labelledWith:)`).
    public mutating func merge(_ other: Exposition, labelledWith extra: [Label]) {
        for family in other.families { add(family, labelledWith: extra) }
    }

    /// The text: each family's TYPE line, then its samples.
    public func rendered() -> String {
        var out = ""
        for family in families {
            out += "# TYPE \(family.name) \(family.type)\n"
            for sample in family.samples {
                out += sample.name
                if !sample.labels.isEmpty {
                    out += "{" + sample.labels.map { "\($0.name)=\"\(Self.escape($0.value))\"" }.joined(separator: ",") + "}"
                }
                out += " \(sample.value)\n"
            }
        }
        return out
    }

    /// The samples named `name` that carry every label in `matching`.
    public func samples(_ name: String, matching: [String: String] = [:]) -> [Sample] {
        families.flatMap(\.samples).filter { sample in
            sample.name == name && matching.allSatisfy { sample.label($0.key) == $0.value }
        }
    }

    /// The sum of those samples' values (0 when there are none): what PromQL's `sum` gives.
    public func sum(_ name: String, matching: [String: String] = [:]) -> Double {
        samples(name, matching: matching).reduce(0) { $0 + ($1.number ?? 0) }
    }

    // MARK: One line

    /// `name{a="b",c="d"} value [timestamp]`; nil if it is not one.
    static func sample(_ line: Substring) -> Sample? {
        var rest = line[...]
        let nameEnd = rest.firstIndex { $0 == "{" || $0 == " " } ?? rest.endIndex
        let name = String(rest[..<nameEnd])
        guard !name.isEmpty else { return nil }
        rest = rest[nameEnd...]
        var labels: [Label] = []
        if rest.first == "{" {
            rest = rest.dropFirst()
            guard let parsed = Self.labels(&rest) else { return nil }
            labels = parsed
        }
        let words = rest.split(separator: " ")
        guard words.count == 1 || words.count == 2 else { return nil }
        let sample = Sample(name: name, labels: labels, value: String(words[0]))
        return sample.number == nil && sample.value != "NaN" ? nil : sample
    }

    /// The labels after `{`, through `}`.
    static func labels(_ rest: inout Substring) -> [Label]? {
        var labels: [Label] = []
        while true {
            if rest.first == "}" { rest = rest.dropFirst(); return labels }
            guard let equals = rest.firstIndex(of: "=") else { return nil }
            let name = rest[..<equals].trimmingPrefix(",")
            rest = rest[rest.index(after: equals)...]
            guard rest.first == "\"" else { return nil }
            rest = rest.dropFirst()
            var value = ""
            var escaped = false
            while let c = rest.first {
                rest = rest.dropFirst()
                if escaped {
                    value.append(c == "n" ? "\n" : c)
                    escaped = false
                } else if c == "\\" {
                    escaped = true
                } else if c == "\"" {
                    break
                } else {
                    value.append(c)
                }
            }
            labels.append(Label(String(name), value))
            if rest.first == "," { rest = rest.dropFirst() }
        }
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
