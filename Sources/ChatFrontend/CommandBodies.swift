import ChatCore

/// A command body the frontend writes with `JSONWriter` rather than
/// `JSONEncoder` (a sizeable part of a REST read's frontend CPU, §11d):
/// the fields `JSONEncoder` would write, absent optionals left out, which
/// the worker's `JSONDecoder` reads the same. Only the bodies of frequent
/// commands; the rest go through `JSONEncoder` (`ChatAPI.call`).
protocol WrittenCommandBody: Encodable {
    func write(to w: inout JSONWriter)
}

extension WrittenCommandBody {
    var commandBytes: [UInt8] {
        var w = JSONWriter(capacity: 256)
        write(to: &w)
        return w.bytes
    }
}

extension Requests.Page {
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.field("page", Int64(page))
        w.field("pageSize", Int64(pageSize))
        w.field("url", url)
        w.key("query")
        w.beginArray()
        for item in query {
            w.beginArray()
            for part in item { w.string(part) }
            w.endArray()
        }
        w.endArray()
        w.endObject()
    }
}

extension Requests.MessageList: WrittenCommandBody {
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.field("roomID", roomID)
        w.key("page")
        page.write(to: &w)
        if let before { w.field("before", before) }
        if let after { w.field("after", after) }
        if let deviceID { w.field("deviceID", deviceID) }
        w.endObject()
    }
}

extension Requests.RoomList: WrittenCommandBody {
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.key("page")
        page.write(to: &w)
        if let roomType { w.field("roomType", roomType) }
        w.field("discover", discover)
        w.endObject()
    }
}

extension Requests.RoomRef: WrittenCommandBody {
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.field("roomID", roomID)
        w.endObject()
    }
}

/// Every socket sends it twice, at open and close (a JSONEncoder was ~2% of
/// the frontend's CPU per handshake); `ipAddress` absent is written as null,
/// which decodes as absent.
extension Requests.Session: WrittenCommandBody {
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.field("sessionID", sessionID)
        w.field("roomID", roomID)
        w.field("sessionType", sessionType)
        w.field("userAgent", userAgent)
        w.field("ipAddress", ipAddress)
        w.field("frontend", frontend)
        if let deviceID { w.field("deviceID", deviceID) }
        w.endObject()
    }
}

extension Requests.MessageRef: WrittenCommandBody {
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.field("roomID", roomID)
        w.field("messageID", messageID)
        if let deviceID { w.field("deviceID", deviceID) }
        w.endObject()
    }
}
