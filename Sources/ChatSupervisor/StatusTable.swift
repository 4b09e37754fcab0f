import Foundation

/// `chatd ctl status` for a person: the control socket's JSON (what
/// `--json` prints, and what scripts and tests read) as aligned tables.
public enum StatusTable {
    /// The tables for a `status` answer; nil when it is not one (an error).
    public static func render(_ answer: String) -> String? {
        guard let status = (try? JSONSerialization.jsonObject(with: Data(answer.utf8))) as? [String: Any],
            let children = status["children"] as? [[String: Any]] else { return nil }
        var out = "status: \(status["status"] as? String ?? "?")\n"
        if let listen = status["listen"] as? String { out += "listen: \(listen)\n" }
        out += "\n" + table(
            ["CHILD", "PID", "READY", "UPTIME", "RESTARTS", "PLANNED", "QUEUE", "WEBSOCKETS"],
            children.map { row in
                [
                    text(row["child"]), text(row["pid"]), yesNo(row["ready"]), uptime(row["uptime_seconds"]), text(row["restarts"]),
                    text(row["planned_restarts"]), text(row["queue_depth"]), text(row["websockets"]),
                ]
            }
        )
        if let hosts = status["hosts"] as? [[String: Any]] { out += "\n" + hostsTable(hosts) }
        let queues = (status["queues"] as? [String: Any] ?? [:]).sorted { $0.key < $1.key }
        if !queues.isEmpty {
            out += "\n" + table(["QUEUE", "IN FLIGHT"], queues.map { [$0.key, text($0.value)] })
        }
        let standbys = status["standbys"] as? [[String: Any]] ?? []
        if !standbys.isEmpty {
            out += "\n" + table(
                ["STANDBY", "PID", "READY", "UPTIME", "RESTARTS", "PLANNED"],
                standbys.map { [text($0["child"]), text($0["pid"]), yesNo($0["ready"]), uptime($0["uptime_seconds"]), text($0["restarts"]), text($0["planned_restarts"])] }
            )
        }
        let handovers = status["handovers"] as? [[String: Any]] ?? []
        if !handovers.isEmpty {
            out += "\n" + table(
                ["HANDOVER", "AT", "RESULT", "MOVED", "REPLAYED", "MS", "PAUSE MEDIAN MS", "PAUSE MAX MS"],
                handovers.map { row in
                    let refused = row["refused"].map { "refused: \(text($0))" }
                    return [
                        text(row["child"]), text(row["at"]), refused ?? "ok", text(row["connections_moved"]), text(row["events_replayed"]),
                        text(row["milliseconds"]), text(row["pause_median_ms"]), text(row["pause_max_ms"]),
                    ]
                }
            )
        }
        return out
    }

    /// Several hosts (`peers:`): one line per host, and each other host's children.
    static func hostsTable(_ hosts: [[String: Any]]) -> String {
        var out = table(
            ["HOST", "RUN", "REACHABLE", "HEARD", "CHILDREN READY", "STATUS"],
            hosts.map { host in
                let children = host["children"] as? [[String: Any]] ?? []
                let ready = children.filter { $0["ready"] as? Bool == true }.count
                let heard = (host["this_host"] as? Bool == true) ? "this host" : text(host["heard_seconds_ago"]) + "s ago"
                return [text(host["host"]), text(host["run"]), yesNo(host["reachable"]), heard, "\(ready)/\(children.count)", text(host["status"])]
            }
        )
        for host in hosts where host["this_host"] as? Bool != true {
            let children = host["children"] as? [[String: Any]] ?? []
            out += "\n" + table(
                ["CHILD OF \(text(host["host"]))", "PID", "READY", "UPTIME", "RESTARTS", "QUEUE"],
                children.map { [text($0["child"]), text($0["pid"]), yesNo($0["ready"]), uptime($0["uptime_seconds"]), text($0["restarts"]), text($0["queue_depth"])] }
            )
        }
        return out
    }

    /// Columns padded to their widest cell, two spaces apart. Widths are in
    /// Characters (what a terminal shows as one cell, give or take wide
    /// glyphs), and padding is added by hand: `padding(toLength:)` counts
    /// UTF-16 units and would cut an emoji or a combining mark short.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell + String(repeating: " ", count: max(0, widths[column] - cell.count))
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    /// A JSON value as a cell: `-` for null or missing.
    static func text(_ value: Any?) -> String {
        switch value {
        case nil, is NSNull: "-"
        case let string as String: string
        case let number as Int: "\(number)"
        case let number as Double: number == number.rounded() && abs(number) < 1e15 ? "\(Int(number))" : "\(number)"
        case let value?: "\(value)"
        }
    }

    static func yesNo(_ value: Any?) -> String {
        guard let flag = value as? Bool else { return "-" }
        return flag ? "yes" : "no"
    }

    /// Seconds as `42s`, `5m03s`, `2h07m`, `3d04h`.
    static func uptime(_ value: Any?) -> String {
        guard let seconds = (value as? Double) ?? (value as? Int).map(Double.init), seconds.isFinite, seconds >= 0 else { return "-" }
        let whole = Int(seconds)
        switch whole {
        case ..<60: return "\(whole)s"
        case ..<3600: return "\(whole / 60)m" + String(format: "%02ds", whole % 60)
        case ..<86_400: return "\(whole / 3600)h" + String(format: "%02dm", whole % 3600 / 60)
        default: return "\(whole / 86_400)d" + String(format: "%02dh", whole % 86_400 / 3600)
        }
    }
}
