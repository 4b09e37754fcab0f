import ChatTesting
import Foundation
import Testing

extension EndToEnd.Browser {
    /// A chromedriver that answers nothing (stopped) is SIGKILLed by `stop`,
    /// and its Chromium does not outlive it: no browser process is left
    /// running, re-parented to init with its profile open.
    @Test func stopLeavesNoBrowserOfAHungDriver() throws {
        let driver = try WebDriver.start()
        defer { driver.stop() }
        _ = try driver.browser()
        let chromium = Self.descendants(of: driver.process.processIdentifier)
        #expect(!chromium.isEmpty, "no Chromium under chromedriver")
        #expect(kill(driver.process.processIdentifier, SIGSTOP) == 0)
        driver.stop()
        #expect(!driver.process.isRunning)
        // The processes killed by pid are the browser's own; its zygote's
        // children exit when they see it gone: bounded wait for that.
        let deadline = Date().addingTimeInterval(10)
        var left = chromium.filter(Self.isAlive)
        while !left.isEmpty && Date() < deadline {
            usleep(50_000)
            left = left.filter(Self.isAlive)
        }
        #expect(left.isEmpty, "Chromium left running: \(left)")
        for pid in left { kill(pid, SIGKILL) }
    }

    /// The processes under `root`, by /proc's parent ids.
    static func descendants(of root: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        var parents: [Int32: Int32] = [:]
        for pid in entries.compactMap(Int32.init) {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { parents[pid] = parent }
        }
        var found: [Int32] = [], frontier = [root]
        while let next = frontier.popLast() {
            let children = parents.filter { $0.value == next }.map(\.key)
            found += children
            frontier += children
        }
        return found
    }

    /// Whether `pid` exists and is not a zombie (one its new parent has not reaped is dead).
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)...].first != "Z"
    }
}
