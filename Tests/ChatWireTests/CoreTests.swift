import ChatCore
import Foundation
import Testing

@Suite struct CoreTests {
    @Test func timestampsRenderAsDRFDoes() {
        #expect(Timestamp(micros: 0).iso8601 == "1970-01-01T00:00:00.000000Z")
        #expect(Timestamp(micros: 1_759_415_400_123_456).iso8601 == "2025-10-02T14:30:00.123456Z")
        #expect(Timestamp(micros: 951_782_400_000_001).iso8601 == "2000-02-29T00:00:00.000001Z")
    }

    @Test func userIDsMatchTheReference() {
        // uuid5(uuid5(NAMESPACE_URL, "chat-api:user-subject"), "user_2abc") in Python.
        #expect(IDs.userID(forSubject: "user_2abc") == "1efe65fc-88da-5326-a507-9c818c27b089")
        #expect(IDs.userID(forSubject: "5BA46122-BC53-562C-89AE-0BE876B7B9AF") == "5ba46122-bc53-562c-89ae-0be876b7b9af")
    }

    @Test func uuid7IsTimeOrderedAndValid() {
        let a = IDs.uuid7(now: Date(timeIntervalSince1970: 1_000))
        let b = IDs.uuid7(now: Date(timeIntervalSince1970: 1_001))
        #expect(a < b)
        #expect(IDs.canonical(a) == a)
        #expect(Array(a)[14] == "7")
    }

    @Test func jsonWriterEscapes() throws {
        var w = JSONWriter()
        w.beginObject()
        w.field("text", "quote \" backslash \\ newline \n tab \t bell \u{07} é 👍")
        w.field("none", nil as String?)
        w.key("list"); w.beginArray(); w.int(1); w.bool(true); w.endArray()
        w.endObject()
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(w.bytes)) as? [String: Any])
        #expect(parsed["text"] as? String == "quote \" backslash \\ newline \n tab \t bell \u{07} é 👍")
        #expect(parsed["none"] is NSNull)
        #expect((parsed["list"] as? [Any])?.count == 2)
    }

    @Test func contentLengthCountsCodePoints() {
        // "👍" is one code point (Python len 1), two UTF-16 units, four bytes.
        #expect(Validation.messageErrors(content: String(repeating: "👍", count: 10), messageType: "text", clientMsgID: nil, maxChars: 10) == nil)
        #expect(Validation.messageErrors(content: String(repeating: "👍", count: 11), messageType: "text", clientMsgID: nil, maxChars: 10) != nil)
        #expect(Validation.messageErrors(content: " \n", messageType: "text", clientMsgID: nil, maxChars: 10) != nil)
        #expect(Validation.messageErrors(content: "", messageType: "image", clientMsgID: nil, maxChars: 10, hasAttachment: true) == nil)
    }

    @Test func clientsSendOnlyTheirOwnMessageTypes() {
        func errors(_ type: String, attachment: Bool = false) -> [String] {
            (Validation.messageErrors(content: "hi", messageType: type, clientMsgID: nil, maxChars: 10, hasAttachment: attachment) ?? []).map(\.field)
        }
        #expect(errors("text") == [])
        #expect(errors("image", attachment: true) == [] && errors("file", attachment: true) == [])
        // The server's own types, and attachment types without a file.
        for type in ["system", "typing", "image", "file", "bogus"] { #expect(errors(type) == ["message_type"], "\(type)") }
        #expect(errors("system", attachment: true) == ["message_type"])
    }

    @Test func clientMessageIDsCountCodePoints() {
        // One grapheme cluster, 10,001 code points.
        let combining = "a" + String(repeating: "\u{301}", count: 10_000)
        #expect(combining.count == 1)
        #expect(Validation.messageErrors(content: "hi", messageType: "text", clientMsgID: combining, maxChars: 10)?.map(\.field) == ["client_msg_id"])
        #expect(Validation.messageErrors(content: "hi", messageType: "text", clientMsgID: String(repeating: "é", count: 64), maxChars: 10) == nil)
    }

    @Test func namesAndEmojiAreBounded() {
        #expect(Validation.roomNameError(String(repeating: "é", count: 255)) == nil)
        #expect(Validation.roomNameError(String(repeating: "é", count: 256)) != nil)
        #expect(Validation.roomNameError(nil) == nil)
        #expect(Validation.fileNameError(String(repeating: "👍", count: 255) + ".txt")?.contains("it has 259") == true)
        #expect(Validation.fileNameError("report.pdf") == nil)
        // 👨‍👩‍👧‍👦 is 25 bytes; 9 ASCII letters are 9.
        #expect(Validation.emojiError("👨‍👩‍👧‍👦") == nil)
        #expect(Validation.emojiError(String(repeating: "x", count: 32)) == nil)
        #expect(Validation.emojiError(String(repeating: "x", count: 33)) != nil)
        #expect(Validation.emojiError("👍👍👍👍👍👍👍👍👍") != nil)  // 36 bytes
    }

    @Test func timestampParsingIsTotal() {
        #expect(Timestamp.parse("2025-10-02T14:30:00Z")?.micros == 1_759_415_400_000_000)
        #expect(Timestamp.parse("2025-10-02")?.micros == 1_759_363_200_000_000)
        #expect(Timestamp.parse("0001-01-01T00:00:00Z") == Timestamp.earliest)
        #expect(Timestamp.parse("9999-12-31T23:59:59Z")?.micros == 253_402_300_799_000_000)
        #expect(Timestamp.parse("9999-12-31T23:59:59.999999Z") == Timestamp.latest)
        // Proleptic Gregorian, as Python's datetime (no Julian switch before 1582).
        #expect(Timestamp.parse("1000-01-01")?.micros == -30_610_224_000_000_000)
        #expect(Timestamp.parse("2025-10-02T16:30:00+02:00") == Timestamp.parse("2025-10-02T14:30:00Z"))
        #expect(Timestamp.parse("2025-10-02T14:30:00.123456789Z")?.micros == 1_759_415_400_123_456)
        #expect(Timestamp.parse("2025-10-02 14:30") == Timestamp.parse("2025-10-02T14:30:00Z"))
        #expect(Timestamp.parse("2024-02-29") != nil)
        for text in ["2025-02-29", "2025-13-01", "2025-10-02T24:00:00Z", "2025-10-02T14:30:00+2", "2025-10-02T14:30:00Zjunk",
                     "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "2025-10-02T14:30:00.Z"] {
            #expect(Timestamp.parse(text) == nil, "\(text)")
        }
        // Outside years 1–9999: nil, never a trap (Int64(Double) overflowed here).
        for text in ["100000000-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "99999999999999999999-01-01",
                     "-100000000-01-01T00:00:00Z", "0000-12-31T23:59:59Z", "", "nope",
                     String(repeating: "9", count: 10_000) + "-01-01"] {
            #expect(Timestamp.parse(text) == nil, "\(text.prefix(40))")
        }
    }

    @Test func paginationNeverOverflows() {
        let huge = Requests.Page(page: Int.max, pageSize: 100, url: "u", query: [])
        #expect(Pagination.offset(huge) == nil)
        #expect(!Pagination.isValid(huge, count: Int64.max))
        #expect(Pagination.links(huge, count: Int64.max) == (nil, nil))
        #expect(Pagination.offset(Requests.Page(page: Int.max, pageSize: 1, url: "u", query: [])) == Int64.max - 1)
        #expect(!Pagination.isValid(Requests.Page(page: 0, pageSize: 10, url: "u", query: []), count: 5))
        #expect(!Pagination.isValid(Requests.Page(page: Int.min, pageSize: 10, url: "u", query: []), count: 5))
        #expect(!Pagination.isValid(Requests.Page(page: 2, pageSize: 0, url: "u", query: []), count: 5))
        #expect(!Pagination.isValid(Requests.Page(page: 2, pageSize: -10, url: "u", query: []), count: 5))
        // A page whose offset fits but whose end does not: valid, and no next link.
        let edge = Requests.Page(page: 2, pageSize: Int.max / 2 + 1, url: "u", query: [])
        #expect(Pagination.offset(edge) == Int64.max / 2 + 1)
        #expect(Pagination.isValid(edge, count: Int64.max))
        #expect(Pagination.links(edge, count: Int64.max).next == nil)
        #expect(Pagination.links(edge, count: Int64.max).previous == "u")
    }

    @Test func uuidSubjectsAreOneUserInAnyCase() {
        let upper = Identity(sub: "5BA46122-BC53-562C-89AE-0BE876B7B9AF", email: "a@x", name: nil, picture: nil)
        let lower = Identity(sub: "5ba46122-bc53-562c-89ae-0be876b7b9af", email: "b@x", name: nil, picture: nil)
        #expect(upper.id == lower.id)
        #expect(upper.sub == lower.sub && upper.sub == "5ba46122-bc53-562c-89ae-0be876b7b9af")
        // Other subjects are compared exactly.
        #expect(Identity(sub: "Alice", email: nil, name: nil, picture: nil).sub == "Alice")
        #expect(IDs.userID(forSubject: "Alice") != IDs.userID(forSubject: "alice"))
    }

    @Test func paginationLinksKeepFiltersLikeDRF() {
        let page = Requests.Page(page: 2, pageSize: 10, url: "http://h/api/chat/rooms/x/messages/", query: [["page_size", "10"], ["before", "m 1"]])
        let links = Pagination.links(page, count: 35)
        #expect(links.next == "http://h/api/chat/rooms/x/messages/?before=m%201&page=3&page_size=10")
        #expect(links.previous == "http://h/api/chat/rooms/x/messages/?before=m%201&page_size=10")
        #expect(Pagination.links(Requests.Page(page: 4, pageSize: 10, url: "u", query: []), count: 35).next == nil)
        #expect(Pagination.isValid(Requests.Page(page: 1, pageSize: 10, url: "u", query: []), count: 0))
        #expect(!Pagination.isValid(Requests.Page(page: 5, pageSize: 10, url: "u", query: []), count: 40))
    }
}
