import ChatBus
import ChatCore
import ChatStore
import ChatWire
import Foundation

/// Calls (issue 17; Store+Calls.swift decides, here the events). Every
/// change arrives at its room's shard, which publishes its room events; a
/// signal goes to its addressee's sockets in the room alone.
extension StoreWorker {
    func writeCalls(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        switch command.kind {
        case .callStart:
            let request = try body(Requests.CallStart.self, command)
            guard let media = CallMedia(rawValue: request.media) else {
                throw StoreError.badRequest([("media", "\"\(request.media)\" is not a valid choice.")])
            }
            let (call, events) = try db.startCall(id: request.callID, room: request.roomID, media: media, user: identity.id)
            return Self.callEvents(call, events, by: identity.id) + [.reply(to: command, status: .created, body: ClientJSON.encode(call))]
        case .callAction:
            let request = try body(Requests.CallRef.self, command)
            guard let action = request.action.flatMap(CallAction.init(rawValue:)), action != .expire else {
                throw StoreError(code: .badRequest, detail: "Malformed command body.")
            }
            let (call, events) = try db.callAction(action, call: request.callID, user: identity.id, ring: config.callRingMicros)
            // Routed by the room the frontend read; a call is never moved, so
            // only a forged command would name another room.
            guard request.roomID == nil || request.roomID == call.roomID else { throw StoreError.notFound("Call not found") }
            return Self.callEvents(call, events, by: identity.id) + [.reply(to: command, status: .ok, body: ClientJSON.encode(call))]
        case .callExpire:
            let request = try body(Requests.CallRef.self, command)
            guard let (call, events) = try db.expireCall(request.callID, ring: config.callRingMicros) else { return [.reply(to: command, status: .ok, body: [])] }
            return Self.callEvents(call, events, by: nil) + [.reply(to: command, status: .ok, body: [])]
        default:
            throw StoreError(code: .badRequest, detail: "Not a calls command: \(command.kind.rawValue)")
        }
    }

    func readCalls(_ command: Command, identity: Identity, in db: any StoreTransaction) throws -> [Event] {
        switch command.kind {
        case .callGet:
            let request = try body(Requests.CallRef.self, command)
            return [.reply(to: command, status: .ok, body: ClientJSON.encode(try db.call(request.callID, viewer: identity.id)))]
        case .callList:
            let request = try body(Requests.RoomPage.self, command)
            let (count, calls) = try db.callPage(request, viewer: identity.id)
            return [Self.pageReply(command, request.page, count: count, items: calls.map(ClientJSON.encode))]
        case .callSignal:
            let request = try body(Requests.CallSignal.self, command)
            try db.checkSignal(call: request.callID, room: request.roomID, from: identity.id, to: request.to)
            let event = ClientJSON.callSignalEvent(callID: request.callID, from: identity.id, signal: Array(request.signal.utf8))
            return [Event.room(request.roomID, key: .onlyUser(request.to), body: event), .reply(to: command, status: .ok, body: [])]
        case .callDue:
            let due = try db.dueCalls(ring: config.callRingMicros).map { Requests.CallRef(callID: $0.id, roomID: $0.roomID) }
            return [.reply(to: command, status: .ok, body: [UInt8](try JSONEncoder().encode(Requests.DueCalls(calls: due))))]
        default:
            throw StoreError(code: .badRequest, detail: "Not a calls read: \(command.kind.rawValue)")
        }
    }

    /// A change's room events, in order.
    static func callEvents(_ call: Call, _ events: [CallEvent], by user: String?) -> [Event] {
        events.map { event in
            // The end of a missed call, or of one the last leaver ended, names who acted, if anyone.
            Event.room(call.roomID, body: ClientJSON.callEvent(event, call, by: user))
        }
    }
}
