import ChatCore
import Foundation
import Testing

@testable import ChatWorkers

/// The store's reader of `message.create` bodies reads what `JSONDecoder`
/// reads, and gives up (the worker then uses `JSONDecoder`) on anything else.
@Suite struct FlatJSONTests {
    static let contents = [
        "", "hello", "quote \" backslash \\ slash /", "lines\nand\ttabs\r", "control \u{01}\u{1F}", "é ü 漢字 🎉 👩‍👩‍👧",
        "\u{2028}\u{2029}", String(repeating: "long ", count: 2_000), "nul \u{0}",
    ]

    func decoded(_ bytes: [UInt8]) -> Requests.MessageCreate? {
        FlatJSON.object(bytes).flatMap(Requests.MessageCreate.init(flat:))
    }

    @Test func readsWhatJSONEncoderWrites() throws {
        for content in Self.contents {
            for (replyTo, clientMsgID): (String?, String?) in [(nil, nil), (IDs.uuid7(), "c-\(content.prefix(5))")] {
                let request = Requests.MessageCreate(id: IDs.uuid7(), roomID: IDs.uuid7(), content: content, messageType: "text", replyTo: replyTo, clientMsgID: clientMsgID)
                let bytes = [UInt8](try JSONEncoder().encode(request))
                let fast = try #require(decoded(bytes))
                let slow = try JSONDecoder().decode(Requests.MessageCreate.self, from: Data(bytes))
                #expect(fast.id == slow.id && fast.roomID == slow.roomID && fast.content == slow.content && fast.content == content)
                #expect(fast.messageType == slow.messageType && fast.replyTo == slow.replyTo && fast.clientMsgID == slow.clientMsgID && fast.file == nil)
            }
        }
    }

    @Test func readsEscapesWhitespaceAndNulls() throws {
        let text = #" { "id" : "i", "roomID":"r" , "content":"\u00e9\ud83c\udf89\/\b\f\"", "messageType":"text", "replyTo": null, "extra": "ignored" } "#
        let request = try #require(decoded(Array(text.utf8)))
        #expect(request.content == "é🎉/\u{8}\u{C}\"" && request.replyTo == nil && request.id == "i" && request.roomID == "r")
        let slow = try JSONDecoder().decode(Requests.MessageCreate.self, from: Data(text.utf8))
        #expect(slow.content == request.content)
    }

    @Test func givesUpOnWhatItDoesNotRead() {
        let bodies = [
            #"{"id":"i","roomID":"r","content":"c","messageType":"text","file":{"hash":"h","name":"n","size":1}}"#,
            #"{"id":"i","roomID":"r","content":"c","messageType":"text","file":null}"#,
            #"{"id":"i","roomID":"r","content":1,"messageType":"text"}"#,
            #"{"id":"i","roomID":"r","content":"c","messageType":null}"#,
            #"{"id":"i","roomID":"r","content":"c"}"#,
            #"{"id":"i","id":"j","roomID":"r","content":"c","messageType":"text"}"#,
            #"{"id":"i","roomID":"r","content":"\ud83c","messageType":"text"}"#,
            #"{"id":"i","roomID":"r","content":"\u+123","messageType":"text"}"#,
            #"{"id":"i","roomID":"r","content":"\x","messageType":"text"}"#,
            #"{"id":"i","roomID":"r","content":"c","messageType":"text"} x"#,
            #"{"id":"i","roomID":"r","content":"c","messageType":"text",}"#,
            #"{"id":"i","roomID":"r","content":"c","messageType":"text""#,
            "{\"id\":\"i\",\"roomID\":\"r\",\"content\":\"a\nb\",\"messageType\":\"text\"}",
            #"["id"]"#, "", "nul",
        ]
        for body in bodies { #expect(decoded(Array(body.utf8)) == nil, "\(body)") }
        // Bytes that are not UTF-8.
        #expect(decoded(Array(#"{"id":"i","roomID":"r","content":""#.utf8) + [0xC3, 0x28] + Array(#"","messageType":"text"}"#.utf8)) == nil)
    }
}
