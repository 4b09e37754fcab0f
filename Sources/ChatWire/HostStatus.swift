/// A supervisor's status for `ctl status` across hosts (`peers:`), published
/// every second on `ctl.status.<host>` to every broker it reaches: a
/// frontend host's into its own broker, a workers host's to each peer's.
/// Each supervisor reads the others' from the brokers of the other hosts.
/// Key: the host's name; body: its status document (the JSON object
/// `ctl status` shows for one host: `host`, `run`, `status`, `children`,
/// `standbys`), which only supervisors read.
public struct HostStatus: Sendable, Equatable {
    public var host: String
    public var document: [UInt8]

    public init(host: String, document: [UInt8]) {
        self.host = host
        self.document = document
    }

    /// What a supervisor subscribes to: every host's status, none of the
    /// frontends' `ctl.` topics.
    public static let topicPrefix = "ctl.status."

    /// The largest status document a supervisor takes in (its status
    /// SUB's `ZMQ_MAXMSGSIZE`): four times the largest a host sends. A
    /// child's row is about 300 bytes and a queue's about 100; a host runs
    /// at most `ShardCount.maxCount` (1,024) store shards, 64 frontends,
    /// a few hundred other workers and standbys: about 1 MiB at most.
    public static let maxDocumentBytes = 4 << 20

    public var event: Event { Event(topic: Self.topicPrefix + host, kind: .hostStatus, key: host, body: document) }

    /// Reads a status event; nil when its topic and key do not name the same host.
    public init?(_ event: Event) {
        guard event.kind == .hostStatus, event.topic.hasPrefix(Self.topicPrefix), !event.key.isEmpty,
            event.topic.dropFirst(Self.topicPrefix.count) == event.key[...]
        else { return nil }
        self.init(host: event.key, document: event.body)
    }
}
