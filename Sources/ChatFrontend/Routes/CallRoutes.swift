import ChatBus
import ChatCore
import ChatWire
import Foundation
import Hummingbird
import NIOCore
import Synchronization

/// Calls (issue 17, api-contract.md "Calls"): `rooms/{room}/calls/`,
/// `calls/{call}/{join,leave,decline,end}/` and `calls/ice_servers/`. A
/// call's changes go to its room's shard, like every change of the room; a
/// path that names only the call learns the room first (`CallRooms`).
struct CallRoutes: Sendable {
    let api: ChatAPI
    typealias Context = ChatAPI.Context

    var routes: [ChatAPI.Route] {
        [
            .init(.post, "/api/chat/rooms/:room/calls/", start),
            .init(.get, "/api/chat/rooms/:room/calls/", history),
            .init(.get, "/api/chat/calls/ice_servers/", iceServers),
            // Spelled out: docs/openapi-routes.py reads the paths from here.
            .init(.post, "/api/chat/calls/:call/join/") { _, context in try await act(.join, context) },
            .init(.post, "/api/chat/calls/:call/leave/") { _, context in try await act(.leave, context) },
            .init(.post, "/api/chat/calls/:call/decline/") { _, context in try await act(.decline, context) },
            .init(.post, "/api/chat/calls/:call/end/") { _, context in try await act(.end, context) },
        ]
    }

    func start(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        let object = try await api.jsonObject(request)
        guard let value = object["media"], !(value is NSNull) else { throw APIError.fields([("media", "This field is required.")]) }
        guard let media = value as? String, CallMedia(rawValue: media) != nil else {
            throw APIError.fields([("media", "\"\(value)\" is not a valid choice.")])
        }
        let reply = try await api.call(.callStart, shardKey: room, caller: caller, body: Requests.CallStart(roomID: room, callID: IDs.uuid7(), media: media))
        if reply.status == .created, let id = Self.field("id", of: reply.body) { api.services.callRooms.remember(call: id, room: room) }
        return APIError.response(reply: reply)
    }

    func history(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let room = try api.roomID(context)
        return try await api.forward(.callList, shardKey: room, caller: caller, body: Requests.RoomPage(roomID: room, page: try api.page(request)))
    }

    func act(_ action: CallAction, _ context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let callID = try api.pathID("call", context)
        let rooms = api.services.callRooms
        let room: String
        if let known = rooms.room(of: callID) {
            room = known
        } else {
            // Any shard reads the one database; its answer also refuses an
            // unknown call (404) and a non-member (403) before any change.
            let reply = try await api.call(.callGet, shardKey: callID, caller: caller, body: Requests.CallRef(callID: callID))
            guard reply.status == .ok, let found = Self.field("room", of: reply.body) else { return APIError.response(reply: reply) }
            rooms.remember(call: callID, room: found)
            room = found
        }
        return try await api.forward(.callAction, shardKey: room, caller: caller, body: Requests.CallRef(callID: callID, roomID: room, action: action.rawValue))
    }

    /// `{"ice_servers": [...]}`: the configured STUN servers as one entry,
    /// the TURN servers as another with credentials for the caller
    /// (`TurnCredentials`), which the TURN server checks on its own.
    func iceServers(_ request: Request, context: Context) async throws -> Response {
        let caller = try context.requireCaller()
        let config = api.services.config.chat
        let stun = config.iceServers.filter { $0.hasPrefix("stun") }
        let turn = config.iceServers.filter { $0.hasPrefix("turn") }
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.key("ice_servers")
        w.beginArray()
        if !stun.isEmpty {
            w.beginObject()
            Self.urls(stun, to: &w)
            w.endObject()
        }
        if !turn.isEmpty, let secret = config.turnSecret {
            let credentials = TurnCredentials.make(user: caller.identity.id, secret: secret, now: Date(), lifetime: config.turnCredentialSeconds)
            w.beginObject()
            Self.urls(turn, to: &w)
            w.field("username", credentials.username)
            w.field("credential", credentials.credential)
            w.endObject()
        }
        w.endArray()
        w.endObject()
        var response = Response.json(.ok, w.bytes)
        // Credentials: never kept by a cache on the way.
        response.headers[.cacheControl] = "no-store"
        return response
    }

    private static func urls(_ urls: [String], to w: inout JSONWriter) {
        w.key("urls")
        w.beginArray()
        for url in urls { w.string(url) }
        w.endArray()
    }

    /// A string field of a reply's JSON object.
    static func field(_ name: String, of body: [UInt8]) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])?[name] as? String
    }
}

/// Which room each recent call is in, so that an action on a call goes
/// straight to its room's shard. A call never moves, so an entry never goes
/// stale; the map is only bounded (emptied when full: a forgotten call costs
/// one `call.get` more).
final class CallRooms: Sendable {
    private let rooms = Mutex<[String: String]>([:])
    static let capacity = 10_000

    func room(of call: String) -> String? { rooms.withLock { $0[call] } }

    func remember(call: String, room: String) {
        rooms.withLock { map in
            if map.count >= Self.capacity { map.removeAll(keepingCapacity: true) }
            map[call] = room
        }
    }
}

/// Ends ringing calls nobody answered (missed, api-contract.md: 45 s). A
/// call is a row, not a timer in some process, so each frontend asks the
/// store once a second which calls are due (`call.due`, an indexed read at
/// any shard) and sends each its `call.expire` at the room's shard, which
/// publishes `call_ended` in the room's order. Several frontends may expire
/// one call: only the first changes it, the others find it missed already.
final class CallSweep: Sendable {
    private let bus: BusClient
    private let life: FrontendLife
    /// A sweep asked and not answered: the next tick waits for it.
    private let asking = Atomic<Bool>(false)
    /// Spreads the reads over the shards.
    private let turn = Atomic<UInt64>(0)
    static let interval = TimeAmount.seconds(1)

    init(bus: BusClient, life: FrontendLife) {
        (self.bus, self.life) = (bus, life)
    }

    func start(on loop: any EventLoop) {
        loop.scheduleRepeatedTask(initialDelay: Self.interval, delay: Self.interval) { [self] task in
            if life.isStopping { return task.cancel() }
            tick(on: loop)
        }
    }

    private func tick(on loop: any EventLoop) {
        guard asking.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return }
        let key = String(turn.add(1, ordering: .relaxed).newValue)
        bus.send(.callDue, to: .store(key: key), user: [], body: []) { [self] result in
            asking.store(false, ordering: .releasing)
            guard case .success(let reply) = result, reply.status == .ok,
                let due = try? JSONDecoder().decode(Requests.DueCalls.self, from: Data(reply.body))
            else { return }
            // Sent from the loop, not from the bus thread that called back.
            loop.execute { [self] in
                for call in due.calls {
                    guard let room = call.roomID, let body = try? JSONEncoder().encode(Requests.CallRef(callID: call.callID)) else { continue }
                    bus.send(.callExpire, to: .store(key: room), user: [], body: [UInt8](body)) { _ in }
                }
            }
        }
    }
}
