import ChatBus
import ChatConfig
import ChatCore
import ChatStore
import ChatWire
import Foundation
import Logging
import Metrics

/// The `search` role: keeps the full-text index in step with the main
/// database and answers message and room searches.
public final class SearchWorker {
    let index: any MessageSearchIndex
    let database: any StoreEngine
    let logger: Logger
    let decoder = JSONDecoder()

    public init(database: any StoreEngine, indexPath: String, logger: Logger) throws {
        _ = Self.lag  // its series shows from the start, at 0
        self.database = database
        self.index = try database.makeSearchIndex(indexPath: indexPath)
        self.logger = logger
    }

    private var lastCatchUp: UInt64 = 0
    /// Messages stored and not yet indexed, after each catch-up (0 when it finished).
    static let lag = Gauge(label: "chatd_search_index_lag_messages")
    /// The last catch-up ran out of time with work left.
    public private(set) var behind = true

    /// Brings the index up to date on a wake-up, at most every 200 ms: under
    /// a stream of messages that gives batches of thousands, not one
    /// transaction per event. (The 500 ms idle tick catches what this skips.)
    public func wake() -> [Event] {
        let now = monotonicNanos()
        guard behind || now - lastCatchUp >= 200_000_000 else { return [] }
        return catchUp()
    }

    /// Brings the index up to date (on start, before answering a search).
    public func catchUp() -> [Event] {
        lastCatchUp = monotonicNanos()
        do {
            let (count, done) = try index.catchUp()
            behind = !done
            try Self.lag.record(done ? 0 : index.lag())
            if count > 0 { logger.debug("indexed", metadata: ["messages": "\(count)", "done": "\(done)"]) }
        } catch {
            logger.error("indexing failed", metadata: ["error": "\(error)"])
        }
        return []
    }

    public func handle(_ batch: [Command]) -> [Event] {
        _ = catchUp()
        return batch.map { command in
            do {
                guard let identity = try? decoder.decode(Identity.self, from: Data(command.user)),
                    let request = try? decoder.decode(Requests.Search.self, from: Data(command.body)) else {
                    return .reply(to: command, error: .detail(.badRequest, "Malformed search command."))
                }
                switch command.kind {
                case .searchMessages:
                    let filters = SearchIndex.Filters(room: request.room, sender: request.sender, after: request.after, before: request.before)
                    let messages = try index.search(request.query, user: identity.id, filters: filters)
                    return .reply(to: command, status: .ok, body: ClientJSON.array(messages.map(ClientJSON.encode)))
                case .searchRooms:
                    let rooms = try database.read { db in
                        let found = try db.searchRooms(request.query, viewer: identity.id, limit: 50)
                        // Issue 17: a room's `encrypted`, as the store worker shows it.
                        let encrypted = try db.encryptedRooms(among: found.map(\.id))
                        return found.map { room in
                            var room = room
                            room.encrypted = encrypted.contains(room.id)
                            return room
                        }
                    }
                    return .reply(to: command, status: .ok, body: ClientJSON.array(rooms.map(ClientJSON.encode)))
                default:
                    return .reply(to: command, error: .detail(.badRequest, "Not a search command: \(command.kind.rawValue)"))
                }
            } catch {
                logger.error("search failed", metadata: ["error": "\(error)"])
                return .reply(to: command, error: .detail(.unavailable, "Search is unavailable, try again."))
            }
        }
    }
}
