import ChatWire
import Foundation
import Testing

@testable import ChatSupervisor

/// `ctl status` across hosts: what the other hosts published, merged with
/// this host's own, and a host gone silent shown unreachable, then forgotten.
@Suite struct HostStatusesTests {
    func status(_ host: String, children: [String]) -> HostStatus {
        let rows = children.map { ["child": $0, "ready": true] as [String: Any] }
        let data = try! JSONSerialization.data(withJSONObject: ["run": "frontend", "children": rows] as [String: Any])
        return HostStatus(host: host, document: Array(data))
    }

    func status(_ host: String, instance: String) -> HostStatus {
        HostStatus(host: host, document: Array(#"{"run":"frontend","instance":"\#(instance)"}"#.utf8))
    }

    /// Two hosts configured with one `host:` hid each other (and share
    /// session names): each supervisor's documents carry its instance.
    @Test func twoSupervisorsUnderOneHostNameAreReportedOnce() {
        var hosts = HostStatuses()
        hosts.this = ("fe-a", "i1")
        // Its own document coming back is no clash; another instance under its name is, once.
        #expect(hosts.received(status("fe-a", instance: "i1"), now: Uptime(seconds: 0)) == nil)
        #expect(hosts.received(status("fe-a", instance: "i9"), now: Uptime(seconds: 1)) == .thisHost(instance: "i9"))
        #expect(hosts.received(status("fe-a", instance: "i9"), now: Uptime(seconds: 2)) == nil)
        #expect(hosts.heard["fe-a"] == nil)

        // Another name: a restart (a new instance, never the old one again) is no clash.
        for (second, instance) in [(0.0, "b1"), (1, "b1"), (2, "b2"), (3, "b2"), (4, "b2")] {
            #expect(hosts.received(status("fe-b", instance: instance), now: Uptime(seconds: second)) == nil)
        }
        // Two live supervisors alternate: reported once.
        #expect(hosts.received(status("fe-c", instance: "c1"), now: Uptime(seconds: 10)) == nil)
        #expect(hosts.received(status("fe-c", instance: "c2"), now: Uptime(seconds: 10.1)) == nil)
        #expect(hosts.received(status("fe-c", instance: "c1"), now: Uptime(seconds: 11)) == .otherHost("fe-c"))
        #expect(hosts.received(status("fe-c", instance: "c2"), now: Uptime(seconds: 11.1)) == nil)
        // Documents without an instance (an older supervisor) are no clash.
        #expect(hosts.received(status("fe-d", children: []), now: Uptime(seconds: 12)) == nil)
        #expect(hosts.received(status("fe-a", children: []), now: Uptime(seconds: 12)) == nil)
    }

    @Test func thisHostFirstThenTheOthersByNameWithWhenHeard() {
        var hosts = HostStatuses()
        hosts.received(status("fe-b", children: ["frontend.0"]), now: Uptime(seconds: 100))
        hosts.received(status("fe-a", children: ["frontend.0", "frontend.1"]), now: Uptime(seconds: 101))
        // Not a JSON object: ignored.
        hosts.received(HostStatus(host: "junk", document: Array("[1]".utf8)), now: Uptime(seconds: 101))
        let rows = hosts.rows(own: ["run": "workers", "children": []], host: "workers", now: Uptime(seconds: 102))
        #expect(rows.compactMap { $0["host"] as? String } == ["workers", "fe-a", "fe-b"])
        #expect(rows.map { $0["this_host"] as? Bool } == [true, false, false])
        #expect(rows.map { $0["reachable"] as? Bool } == [true, true, true])
        #expect(rows[1]["heard_seconds_ago"] as? Double == 1 && rows[2]["heard_seconds_ago"] as? Double == 2)
        #expect((rows[1]["children"] as? [[String: Any]])?.count == 2)
    }

    @Test func aSilentHostIsUnreachableThenForgottenAndANewDocumentReplacesTheOld() {
        var hosts = HostStatuses()
        hosts.received(status("fe-a", children: ["frontend.0"]), now: Uptime(seconds: 0))
        hosts.received(status("fe-b", children: ["frontend.0"]), now: Uptime(seconds: 0))
        hosts.received(status("fe-b", children: ["frontend.0", "frontend.1"]), now: Uptime(seconds: 9))
        var rows = hosts.rows(own: [:], host: "w", now: Uptime(seconds: 10))
        #expect(rows.map { $0["reachable"] as? Bool } == [true, false, true])
        #expect((rows[2]["children"] as? [[String: Any]])?.count == 2)
        // Exactly at the bound still reachable; past it not.
        rows = hosts.rows(own: [:], host: "w", now: Uptime(seconds: 9 + HostStatuses.unreachableSeconds))
        #expect(rows[2]["reachable"] as? Bool == true)
        rows = hosts.rows(own: [:], host: "w", now: Uptime(seconds: 1 + HostStatuses.forgetSeconds))
        #expect(rows.compactMap { $0["host"] as? String } == ["w", "fe-b"])
        // A document under this host's own name does not replace its own row.
        hosts.received(status("w", children: ["x"]), now: Uptime(seconds: 1 + HostStatuses.forgetSeconds))
        rows = hosts.rows(own: ["children": []], host: "w", now: Uptime(seconds: 2 + HostStatuses.forgetSeconds))
        #expect(rows.count == 2 && (rows[0]["children"] as? [[String: Any]])?.isEmpty == true)
    }

    /// A supervisor nobody asks for `ctl status` still forgets hosts gone
    /// for good: as statuses keep arriving from others.
    @Test func hostsGoneForGoodAreForgottenOnReceiptToo() {
        var hosts = HostStatuses()
        hosts.received(status("old-name", children: ["frontend.0"]), now: Uptime(seconds: 0))
        hosts.received(status("fe-a", children: ["frontend.0"]), now: Uptime(seconds: HostStatuses.forgetSeconds))
        #expect(Set(hosts.heard.keys) == ["old-name", "fe-a"])
        hosts.received(status("fe-a", children: ["frontend.0"]), now: Uptime(seconds: 1 + HostStatuses.forgetSeconds))
        #expect(Set(hosts.heard.keys) == ["fe-a"])
    }

    @Test func theTableListsEveryHostAndTheOthersChildren() throws {
        var hosts = HostStatuses()
        hosts.received(status("fe-a", children: ["frontend.0"]), now: Uptime(seconds: 0))
        let rows = hosts.rows(own: ["run": "workers", "children": [["child": "store.0", "ready": true]]], host: "w", now: Uptime(seconds: 30))
        let answer = Supervisor.json(["children": [] as [Any], "status": "ok", "hosts": rows])
        let text = try #require(StatusTable.render(answer))
        #expect(text.contains("HOST"))
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("w ") && $0.contains("this host") && $0.contains("1/1") })
        #expect(lines.contains { $0.hasPrefix("fe-a") && $0.contains("no") && $0.contains("30s ago") })
        #expect(lines.contains { $0.hasPrefix("CHILD OF fe-a") })
    }

    @Test func theWireCarriesOneHostsStatusUnderItsName() throws {
        let status = HostStatus(host: "fe-a", document: Array("{}".utf8))
        let decoded = try Event(frames: status.event.encode())
        #expect(HostStatus(decoded) == status)
        #expect(decoded.topic.hasPrefix(HostStatus.topicPrefix))
        // Topic and key must agree.
        var forged = status.event
        forged.key = "fe-b"
        #expect(HostStatus(forged) == nil)
    }
}
