/// A worker's heartbeat, published every 500 ms on `hb.<worker>`
/// (`hb.store.0`, `hb.receipts.1`) with the body `<role> <index> <pid>`, plus
/// ` failed` when this process replaces one that crashed or hung. A new pid
/// under a name tells frontends the worker was replaced (resend what the old
/// one took down); ` failed` counts toward poison commands. ` link=<n>`
/// (left out while 0) is the generation of the worker's link to the broker
/// the heartbeat went through, raised each time that link drops: the same
/// pid with another generation tells that broker's frontends the link was
/// down, and room events published meanwhile never reached them.
public struct Heartbeat: Sendable, Equatable {
    public var worker: WorkerName
    public var pid: Int32
    /// This process replaces one that crashed or hung.
    public var failed: Bool
    /// The generation of the link it went through (`BusLinkMachine`).
    public var link: UInt32

    public init(worker: WorkerName, pid: Int32, failed: Bool = false, link: UInt32 = 0) {
        self.worker = worker
        self.pid = pid
        self.failed = failed
        self.link = link
    }

    /// The topic this worker's heartbeats go on.
    public static func topic(of worker: WorkerName) -> String { Topic.heartbeat(worker.description) }
    public var topic: String { Self.topic(of: worker) }

    public var body: [UInt8] {
        Array("\(worker.role.rawValue) \(worker.index) \(pid)\(failed ? " failed" : "")\(link == 0 ? "" : " link=\(link)")".utf8)
    }

    public var event: Event { Event(topic: topic, kind: .heartbeat, key: "", body: body) }

    /// Reads a heartbeat event; nil when its topic or body is not one (the
    /// body's name must match the topic's).
    public init?(_ event: Event) {
        guard event.kind == .heartbeat, event.topic.hasPrefix(Topic.heartbeatPrefix),
            let worker = WorkerName(String(event.topic.dropFirst(Topic.heartbeatPrefix.count)))
        else { return nil }
        var fields = event.body.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
        var link: UInt32 = 0
        if let last = fields.last, last.hasPrefix("link=") {
            guard let number = UInt32(last.dropFirst(5)), number > 0 else { return nil }
            link = number
            fields.removeLast()
        }
        guard fields.count == 3 || (fields.count == 4 && fields[3] == "failed"),
            fields[0] == worker.role.rawValue, fields[1] == String(worker.index), let pid = Int32(fields[2])
        else { return nil }
        self.init(worker: worker, pid: pid, failed: fields.count == 4, link: link)
    }
}

/// The store shard count frontends spread store commands over, announced by
/// the broker on `ctl.shards` every 500 ms (body: the count in decimal).
public struct ShardCount: Sendable, Equatable {
    public var count: Int

    public init(_ count: Int) {
        precondition(count > 0, "shard count \(count)")
        self.count = count
    }

    public var event: Event {
        Event(topic: Topic.storeShards, kind: .storeShards, key: "", body: Array(String(count).utf8))
    }

    /// More shards than any host runs: a frontend opens a socket per shard,
    /// so a corrupt announcement must not make it open millions.
    public static let maxCount = 1_024

    /// Reads an announcement; nil for anything else or a count outside 1...`maxCount`.
    public init?(_ event: Event) {
        guard event.kind == .storeShards, event.topic == Topic.storeShards,
            let count = Int(String(decoding: event.body, as: UTF8.self)), (1...Self.maxCount).contains(count)
        else { return nil }
        self.count = count
    }
}
