/// Who a message mentions (api-contract.md "Notification preferences and
/// mentions"): `@` followed by a room member's display name or email, the
/// longest that fits, compared case-insensitively, or `@here` for every
/// member. A pure function of the text and the members, shared by both
/// engines.
///
/// Where a mention starts and ends:
/// - an `@` starts one at the start of the text or after a character that
///   is not a letter, digit or `_` (so `bob@example.com` in running text
///   mentions nobody);
/// - a name ends where the text ends or the next character is not a letter,
///   digit or `_`, and is not one of `.`, `-`, `@` followed by a letter or
///   digit: `@alice.`, `@alice,`, `@alice's` and `(@alice)` mention Alice;
///   `@alicex` and `@alice.smith` do not (unless that is someone's name);
/// - of the names that fit, the longest wins (`@Ann Lee` is Ann Lee, not
///   Ann, when both are members).
///
/// The sender is never mentioned, by name or by `@here`. Each user appears
/// once, in the order of their first mention.
public enum Mentions {
    /// What the parser knows of a member.
    public struct Member: Sendable, Hashable {
        public var id: String
        public var displayName: String
        public var email: String

        public init(id: String, displayName: String, email: String) {
            (self.id, self.displayName, self.email) = (id, displayName, email)
        }
    }

    /// `@here`'s word.
    static let here: [Character] = Array("here")

    /// Whether `text` can mention anyone at all: the cheap test the store
    /// makes before it reads the members (a message without `@` costs nothing).
    public static func mayMention(_ text: String) -> Bool {
        text.utf8.contains(UInt8(ascii: "@"))
    }

    /// How many `@`s that start a word one message has looked up: past it
    /// the rest are text. Bounds a message's cost inside the store's write
    /// transaction (a 10,000-character `@a @a …` in a room of 1,000 members
    /// would otherwise try every name thousands of times); far past any
    /// message a person writes.
    public static let maxMentionStarts = 100

    /// The ids `text` mentions among `members`, the sender (`sender`) left out.
    public static func parse(_ text: String, members: [Member], sender: String) -> [String] {
        guard mayMention(text) else { return [] }
        let chars = Array(text)
        // The text lowercased once, a character each (one that lowercases to
        // more than one character, none known, stays as it is).
        let folded = chars.map { c -> Character in
            let lower = c.lowercased()
            return lower.count == 1 ? Character(lower) : c
        }
        // Candidates: every non-empty name and email, lowercased, with their
        // user, by first character, so that an `@` tries only the names it can start.
        var names: [Character: [(name: [Character], id: String?)]] = [here[0]: [(here, nil)]]
        for member in members {
            for name in [member.displayName, member.email] where !name.isEmpty {
                let lower = Array(name.lowercased())
                names[lower[0], default: []].append((lower, member.id))
            }
        }
        var found: [String] = []
        var seen = Set<String>()
        func add(_ id: String) {
            if id != sender && seen.insert(id).inserted { found.append(id) }
        }
        var index = 0
        var starts = 0
        while index < chars.count, starts < maxMentionStarts {
            defer { index += 1 }
            guard chars[index] == "@", index == 0 || !isWordCharacter(chars[index - 1]) else { continue }
            starts += 1
            let start = index + 1
            guard start < chars.count, let candidates = names[folded[start]] else { continue }
            var best: (length: Int, id: String?)?
            for (name, id) in candidates where name.count > (best?.length ?? 0) {
                if matches(name, in: folded, at: start) && endsName(chars, at: start + name.count) { best = (name.count, id) }
            }
            guard let best else { continue }
            if let id = best.id {
                add(id)
            } else {
                for member in members { add(member.id) }
            }
            index = start + best.length - 1
        }
        return found
    }

    /// Whether `name` is at `start` of `folded` (both lowercased).
    static func matches(_ name: [Character], in folded: [Character], at start: Int) -> Bool {
        guard start + name.count <= folded.count else { return false }
        for (offset, c) in name.enumerated() where folded[start + offset] != c { return false }
        return true
    }

    /// Whether a name may end just before `end`.
    static func endsName(_ chars: [Character], at end: Int) -> Bool {
        guard end < chars.count else { return true }
        let next = chars[end]
        if isWordCharacter(next) { return false }
        // Punctuation inside a longer word (`alice.smith`, `bob@x.com`, `ann-marie`) continues it.
        if end + 1 < chars.count, ".-@".contains(next), chars[end + 1].isLetter || chars[end + 1].isNumber { return false }
        return true
    }

    static func isWordCharacter(_ c: Character) -> Bool {
        c.isLetter || c.isNumber || c == "_"
    }
}
