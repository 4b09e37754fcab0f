import ChatTesting
import Foundation

/// One client socket: sends its share, and counts every message event of
/// its room. Closed loop: at most `window` of its own messages unconfirmed.
/// Paced (`schedule` set): message n goes out at `schedule(n)` whatever is
/// unconfirmed, and every delivery's latency is taken from that scheduled
/// time, so a stall delays the clock of every message behind it
/// (no coordinated omission).
final class Member: @unchecked Sendable {
    let socket: WebSocketClient
    let toSend: Int
    let expected: Int
    let window: Int
    let tag: String
    /// The text after the tag and number; filler to `contentBytes` unless set.
    var text: ((Int) -> String)?
    /// Content length of each message, bytes (the filler pads to it).
    var contentBytes = 128
    /// Paced mode, senders: the monotonic time (ns) message n is due.
    var schedule: ((Int) -> UInt64)?
    /// Paced mode, every member: record `latencies`.
    var measuresLatency = false
    /// Paced mode: milliseconds from each delivered message's scheduled send to its arrival here.
    var latencies: [Double] = []
    var received = 0
    var distinct = Set<String>()
    var duplicates = 0
    var failure: String?
    /// The monotonic time (ns) by which the whole run must be over (`--target`'s `--run-deadline`).
    var runDeadline = UInt64.max
    private var sent = 0
    private var confirmed = 0

    init(socket: WebSocketClient, toSend: Int, expected: Int, window: Int, tag: String, text: ((Int) -> String)? = nil) {
        self.socket = socket
        self.toSend = toSend
        self.expected = expected
        self.window = window
        self.tag = tag
        self.text = text
    }

    func run() {
        var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)]
        do {
            while received < expected {
                if now() >= runDeadline {
                    failure = "\(tag): the run's deadline passed with \(received)/\(expected) received"
                    return
                }
                let nextSend = try sendDue()
                // Frames come out until nil, so nothing buffered waits unparsed;
                // what came may have confirmed some, which frees the window: send first.
                var took = false
                while let frame = try socket.receive(timeout: 0) { try take(frame); took = true }
                if took { continue }
                let deadline = min(nextSend ?? now() + 30_000_000_000, runDeadline)
                if waitReadable(&fds, until: deadline) == 0 && nextSend == nil && deadline < runDeadline {
                    failure = "\(tag): timed out with \(received)/\(expected) received"
                    return
                }
            }
        } catch {
            failure = "\(tag): \(error)"
        }
    }

    /// Sends what is due; returns when the next paced send is due (nil: closed loop or all sent).
    private func sendDue() throws -> UInt64? {
        if let schedule {
            while sent < toSend && schedule(sent) <= now() {
                try socket.send(text: content(sent, due: schedule(sent)))
                sent += 1
            }
            return sent < toSend ? schedule(sent) : nil
        }
        while sent < toSend && sent - confirmed < window {
            try socket.send(text: content(sent, due: nil))
            sent += 1
        }
        return nil
    }

    /// `{"type":"message","content":"<tag> <n> [@<due ns>] xxx…"}`, the content `contentBytes` long.
    private func content(_ n: Int, due: UInt64?) -> String {
        var head = "\(tag) \(n) "
        if let due { head += "@\(due) " }
        let body = text?(n) ?? String(repeating: "x", count: max(0, contentBytes - head.utf8.count))
        return #"{"type":"message","content":"\#(head)\#(body)"}"#
    }

    /// Counts a frame: a message event of the room, or an error.
    private func take(_ frame: WebSocketClient.Frame) throws {
        guard frame.opcode == .text else {
            if frame.opcode == .close { throw TestServerError(description: "closed with \(frame.closeCode ?? 0)") }
            return
        }
        let arrived = now()
        let text = frame.text
        guard text.hasPrefix(#"{"type":"message""#) else {
            if text.contains(#""type":"error""#) { throw TestServerError(description: text) }
            return
        }
        received += 1
        if let range = text.range(of: #""id":""#) {
            let id = text[range.upperBound...].prefix(36)
            if !distinct.insert(String(id)).inserted { duplicates += 1 }
        }
        if text.contains(#""content":"\#(tag) "#) { confirmed += 1 }
        if measuresLatency, let due = Self.due(in: text) {
            latencies.append(Double(Int64(bitPattern: arrived &- due)) / 1e6)
        }
    }

    /// The scheduled send time a paced message carries after `@`.
    static func due(in text: String) -> UInt64? {
        guard let at = text.range(of: " @") else { return nil }
        return UInt64(text[at.upperBound...].prefix { $0.isNumber })
    }
}

/// Runs every member on a thread of its own until all are done.
func runAllIgnoringFailures(_ members: [Member]) {
    let group = DispatchGroup()
    for member in members {
        group.enter()
        Thread { member.run(); group.leave() }.start()
    }
    group.wait()
}

/// Runs every member; the first failure, if any, is thrown.
func runAll(_ members: [Member]) throws {
    runAllIgnoringFailures(members)
    if let failure = members.compactMap(\.failure).first { throw TestServerError(description: failure) }
}
