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
        #expect(Validation.messageErrors(content: "", messageType: "image", clientMsgID: nil, maxChars: 10) == nil)
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
