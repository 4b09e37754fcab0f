import ChatCore
import Testing

@Suite struct MentionsParserTests {
    static let alice = Mentions.Member(id: "a", displayName: "Alice", email: "alice@example.com")
    static let ann = Mentions.Member(id: "n", displayName: "Ann", email: "ann@example.com")
    static let annLee = Mentions.Member(id: "l", displayName: "Ann Lee", email: "lee@example.com")
    static let bob = Mentions.Member(id: "b", displayName: "Bob", email: "bob@example.com")
    static let members = [alice, ann, annLee, bob]

    func parse(_ text: String, sender: String = "b") -> [String] {
        Mentions.parse(text, members: Self.members, sender: sender)
    }

    @Test func displayNameAndEmailCaseInsensitive() {
        #expect(parse("hi @alice") == ["a"])
        #expect(parse("hi @ALICE!") == ["a"])
        #expect(parse("@Alice@Example.com see this") == ["a"])
        #expect(parse("mail @lee@example.com") == ["l"])
    }

    @Test func longestMatchWins() {
        #expect(parse("@Ann Lee, look") == ["l"])
        #expect(parse("@ann look") == ["n"])
        #expect(parse("@ann leeway") == ["n"])  // "Ann Lee" does not end where a word goes on
    }

    @Test func whatEndsAName() {
        #expect(parse("@alicex") == [])
        #expect(parse("@alice.smith") == [])
        #expect(parse("thanks @alice.") == ["a"])
        #expect(parse("(@alice)") == ["a"])
        #expect(parse("@alice's idea") == ["a"])
        #expect(parse("@alice_2") == [])
        #expect(parse("@alice-san") == [])
        #expect(parse("@alice\nnext line") == ["a"])
        #expect(parse("@alice") == ["a"])
    }

    @Test func anAtInsideAWordIsNoMention() {
        #expect(parse("write to bob@example.com or x@alice") == [])
        #expect(parse("@") == [])
        #expect(parse("@@alice") == ["a"])
        #expect(parse("no at sign") == [])
    }

    @Test func multipleMentionsWithoutDuplicatesInOrder() {
        #expect(parse("@ann and @alice and @Ann again, @alice@example.com") == ["n", "a"])
        #expect(parse("@alice @ann lee @nobody") == ["a", "l"])
    }

    @Test func hereMentionsEveryoneButTheSender() {
        #expect(parse("@here lunch?") == ["a", "n", "l"])
        #expect(parse("@alice @here") == ["a", "n", "l"])
        #expect(parse("@HERE.") == ["a", "n", "l"])
        #expect(parse("@hereby") == [])
        #expect(parse("@here", sender: "a") == ["n", "l", "b"])
    }

    @Test func theSenderIsNeverMentioned() {
        #expect(parse("note to self @bob") == [])
        #expect(parse("@bob @alice") == ["a"])
    }

    @Test func aNameLongerThanHereWins() {
        let members = [Mentions.Member(id: "h", displayName: "Here Be Dragons", email: "h@example.com"), Self.alice]
        #expect(Mentions.parse("@here be dragons", members: members, sender: "a") == ["h"])
        #expect(Mentions.parse("@here we go", members: members, sender: "a") == ["h"])
    }

    @Test func unicodeNames() {
        let members = [Mentions.Member(id: "z", displayName: "Zoë Ørsted", email: ""), Self.bob]
        #expect(Mentions.parse("hej @ZOË ØRSTED!", members: members, sender: "b") == ["z"])
        #expect(Mentions.parse("👍 @zoë ørsted 👍", members: members, sender: "b") == ["z"])
    }

    /// Only the first `maxMentionStarts` word-starting `@`s are looked up,
    /// so a text of `@`s costs a bounded number of name comparisons.
    @Test func theAtsLookedUpAreBounded() {
        let limit = Mentions.maxMentionStarts
        #expect(parse(String(repeating: "@x ", count: limit - 1) + "@alice") == ["a"])
        #expect(parse(String(repeating: "@x ", count: limit) + "@alice") == [])
        // `@`s inside words (emails in running text) do not count toward it.
        #expect(parse(String(repeating: "a@b ", count: limit) + "@alice") == ["a"])
        // A room of a thousand names sharing a first letter, and a long text of them: all found that fit.
        let many = (0..<1000).map { Mentions.Member(id: "m\($0)", displayName: "Member \($0)", email: "") }
        let text = (0..<5000).map { "@member \($0 % 1000)" }.joined(separator: " ")
        #expect(Mentions.parse(text, members: many, sender: "x") == (0..<limit).map { "m\($0)" })
    }

    @Test func onlyTextWithAnAtMayMention() {
        #expect(!Mentions.mayMention("hello"))
        #expect(Mentions.mayMention("a@b"))
    }
}
