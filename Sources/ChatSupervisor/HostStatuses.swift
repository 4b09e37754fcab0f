import ChatWire
import Foundation

/// What a supervisor knows of the other hosts for `ctl status` across hosts
/// (`peers:`): the latest status each published (`HostStatus`) and when it
/// arrived, on this supervisor's monotonic clock (another host's wall clock
/// says nothing about how long ago it was heard). Pure: time is passed in.
struct HostStatuses {
    /// Hosts publish every `Supervisor.hostStatusSeconds` (1 s): one not
    /// heard from for this long, several documents missed, is shown
    /// unreachable (its host is down, or cut off from every broker this one
    /// reads).
    static let unreachableSeconds = 5.0
    /// And left out after an hour: a host renamed or gone for good.
    static let forgetSeconds = 3_600.0

    struct Heard {
        var document: [String: Any]
        var at: Uptime
        /// The publishing supervisor's `instance`, and the one heard under
        /// this name before it.
        var instance: String?
        var earlier: String?
    }

    /// Two supervisors publish under one host name: they hide each other in
    /// `ctl status`, and share `<host>/<slot>` session names, so one's
    /// restart closes the other's sessions.
    enum Clash: Equatable {
        /// Another supervisor uses this host's own name.
        case thisHost(instance: String)
        /// Two other supervisors use this name: their documents alternate.
        case otherHost(String)
    }

    private(set) var heard: [String: Heard] = [:]
    /// This host's name and this supervisor's instance (random per
    /// process), set when statuses are exchanged.
    var this: (host: String, instance: String)?
    /// Clashes already reported: each is logged once, not every second.
    private(set) var reported: Set<String> = []

    /// A host's status arrived. One that is not a JSON object is ignored.
    /// Hosts long gone are dropped here too, not only when `ctl status`
    /// asks: renamed hosts must not pile up on a supervisor nobody queries.
    /// Returns a clash of host names the first time it is seen: a document
    /// under this host's name from another instance, or under another
    /// name from an instance heard there before the last one (a restarted
    /// host never goes back to its old instance; two live ones alternate).
    @discardableResult
    mutating func received(_ status: HostStatus, now: Uptime) -> Clash? {
        forget(now: now)
        guard let document = (try? JSONSerialization.jsonObject(with: Data(status.document))) as? [String: Any] else { return nil }
        let instance = document["instance"] as? String
        if let this, status.host == this.host {
            guard let instance, instance != this.instance else { return nil }
            return report(.thisHost(instance: instance), key: "instance " + instance)
        }
        let previous = heard[status.host]
        let earlier = previous?.instance == instance ? previous?.earlier : previous?.instance
        heard[status.host] = Heard(document: document, at: now, instance: instance, earlier: earlier)
        guard let instance, let previous, previous.instance != instance, previous.earlier == instance,
            now.seconds(since: previous.at) <= Self.unreachableSeconds
        else { return nil }
        return report(.otherHost(status.host), key: "host " + status.host)
    }

    private mutating func report(_ clash: Clash, key: String) -> Clash? {
        // Bounded: a flood of instances costs at most this many entries.
        guard reported.count < 100, reported.insert(key).inserted else { return nil }
        return clash
    }

    private mutating func forget(now: Uptime) {
        heard = heard.filter { now.seconds(since: $0.value.at) <= Self.forgetSeconds }
    }

    /// Every host, this one (`own`, named `host`) first, then the others by
    /// name, each with `heard_seconds_ago` and `reachable`. The others'
    /// documents as they sent them (one under this host's own name is not
    /// kept: `received` logs it as a clash).
    mutating func rows(own: [String: Any], host: String, now: Uptime) -> [[String: Any]] {
        forget(now: now)
        var mine = own
        mine["host"] = host
        mine["this_host"] = true
        mine["reachable"] = true
        mine["heard_seconds_ago"] = 0
        let others = heard.filter { $0.key != host }.sorted { $0.key < $1.key }.map { name, heard -> [String: Any] in
            var row = heard.document
            let ago = now.seconds(since: heard.at)
            row["host"] = name
            row["this_host"] = false
            row["reachable"] = ago <= Self.unreachableSeconds
            row["heard_seconds_ago"] = (ago * 10).rounded() / 10
            return row
        }
        return [mine] + others
    }
}
