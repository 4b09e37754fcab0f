import ChatBus
import ChatWire
import Foundation

/// `ctl status` across hosts (`peers:`; docs/protocol.md, "Several frontend
/// hosts"): every supervisor publishes its host's children every
/// `hostStatusSeconds` to the brokers it reaches (a frontend host to its
/// own, a workers host to every peer's) and reads the others' from every
/// broker that carries them (`ChatConfig.statusBrokers`); `ctl status` lists
/// every host, and one not heard from for `HostStatuses.unreachableSeconds`
/// as unreachable.
extension Supervisor {
    /// A few hundred bytes per host and broker: cheap enough every second,
    /// and "unreachable" within a few seconds of a host going silent.
    static let hostStatusSeconds = 1.0

    /// Starts publishing and reading when this host is one of several.
    func startHostStatus() {
        let remote = config.statusBrokers
        guard !remote.isEmpty else { return }
        let publishTo = config.run.runsFrontend ? [config.busAddress] : config.workerBuses
        do {
            hostExchange = try StatusExchange(publishTo: publishTo, readFrom: remote, security: BusSecurity(keys: config.busKeys))
        } catch {
            return logger.error("cannot exchange status with the other hosts; ctl status shows this host only", metadata: ["error": "\(error)"])
        }
        hostStatuses.this = (config.host, String(UInt64.random(in: 0...UInt64.max), radix: 36))
        logger.info("exchanging status with the other hosts", metadata: [
            "host": "\(config.host)", "reads": "\(remote.map(\.eventsOut).joined(separator: ","))",
        ])
        schedule(every: Self.hostStatusSeconds) { [weak self] in self?.exchangeHostStatus() }
    }

    func stopHostStatus() {
        hostExchange?.close()
        hostExchange = nil
    }

    private func exchangeHostStatus() {
        guard let exchange = hostExchange else { return }
        exchange.checkConnections(logger: logger)
        readHostStatuses()
        let own = ownHostStatus(statusObject())
        do {
            try exchange.publish(HostStatus(host: config.host, document: Array(Self.json(own).utf8)))
        } catch {
            logger.warning("cannot publish this host's status", metadata: ["error": "\(error)"])
        }
    }

    /// Takes in what the other hosts published since the last read.
    func readHostStatuses() {
        guard let exchange = hostExchange else { return }
        let now = Uptime.now()
        do {
            for status in try exchange.received() {
                switch hostStatuses.received(status, now: now) {
                case nil: break
                case .thisHost(let instance):
                    logger.error(
                        "another host publishes its status under this host's name: each host needs its own host: (ctl status shows one of them, and their session names clash: one's restart closes the other's sessions)",
                        metadata: ["host": "\(config.host)", "other.instance": "\(instance)"])
                case .otherHost(let name):
                    logger.error(
                        "two other hosts publish their status under one name: each host needs its own host: (ctl status shows one of them, and their session names clash)",
                        metadata: ["host": "\(name)"])
                }
            }
        } catch {
            logger.warning("cannot read the other hosts' status", metadata: ["error": "\(error)"])
        }
    }

    /// What the other hosts show of this one: its part of `ctl status`.
    func ownHostStatus(_ status: [String: Any]) -> [String: Any] {
        var own: [String: Any] = ["run": config.run.rawValue, "bus": config.bus ?? NSNull()]
        // Which supervisor published it: two hosts under one name tell apart.
        if let this = hostStatuses.this { own["instance"] = this.instance }
        for key in ["status", "children", "standbys", "queues"] { own[key] = status[key] }
        return own
    }

    /// `ctl status`'s `hosts`: this host and every other heard from; nil on one host.
    func hostRows(_ status: [String: Any]) -> [[String: Any]]? {
        guard hostExchange != nil else { return nil }
        readHostStatuses()
        return hostStatuses.rows(own: ownHostStatus(status), host: config.host, now: Uptime.now())
    }
}
