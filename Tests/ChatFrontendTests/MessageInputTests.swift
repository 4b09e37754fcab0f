import ChatCore
import Foundation
import Testing

@testable import ChatFrontend
@testable import ChatWorkers

/// The body a WebSocket message's command carries, written by `JSONWriter`:
/// the worker reads it as `JSONDecoder` reads what `JSONEncoder` writes.
@Suite struct MessageInputTests {
    @Test func theCommandBodyDecodesToTheRequest() throws {
        let contents = ["", "hi", "\"quoted\" \\ / \n\t\r\u{01}", "é 漢字 🎉", String(repeating: "x", count: 5_000)]
        for content in contents {
            for (replyTo, clientMsgID): (String?, String?) in [(nil, nil), (IDs.uuid7(), "client-1"), (nil, "")] {
                let request = Requests.MessageCreate(id: IDs.uuid7(), roomID: IDs.uuid7(), content: content, messageType: "text", replyTo: replyTo, clientMsgID: clientMsgID)
                let body = try request.commandBody()
                for decoded in [try JSONDecoder().decode(Requests.MessageCreate.self, from: Data(body)),
                                try #require(FlatJSON.object(body).flatMap(Requests.MessageCreate.init(flat:)))] {
                    #expect(decoded.id == request.id && decoded.roomID == request.roomID && decoded.content == content)
                    #expect(decoded.messageType == "text" && decoded.replyTo == replyTo && decoded.clientMsgID == clientMsgID && decoded.file == nil)
                }
            }
        }
    }

    @Test func aBodyWithAFileKeepsIt() throws {
        var request = Requests.MessageCreate(id: IDs.uuid7(), roomID: IDs.uuid7(), content: "", messageType: "file", replyTo: nil, clientMsgID: nil)
        request.file = StoredFile(hash: "ab", name: "a.txt", size: 3)
        let decoded = try JSONDecoder().decode(Requests.MessageCreate.self, from: Data(try request.commandBody()))
        #expect(decoded.file == request.file)
    }
}
