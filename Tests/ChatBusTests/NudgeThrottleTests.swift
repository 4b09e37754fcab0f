import ChatBus
import Testing

/// The store's nudges to the search worker: at once after a quiet spell, at
/// most one per gap under a stream of writes, and the last write of a burst
/// is always told.
@Suite struct NudgeThrottleTests {
    let gap = NudgeThrottle.gap

    // `#expect` cannot call a mutating method in place.
    private func wrote(_ throttle: inout NudgeThrottle, _ now: UInt64) -> Bool { throttle.wrote(now: now) }
    private func due(_ throttle: inout NudgeThrottle, _ now: UInt64) -> Bool { throttle.due(now: now) }

    @Test func theFirstWriteAfterQuietIsToldAtOnce() {
        var throttle = NudgeThrottle()
        #expect(wrote(&throttle, 1_000))
        #expect(!throttle.owed && throttle.deadline == nil)
        #expect(!due(&throttle, 1_000 + 10 * gap))
        // Quiet for a whole gap: the next write goes at once again.
        #expect(wrote(&throttle, 1_000 + 10 * gap))
    }

    @Test func writesInsideTheGapAreToldOnceWhenItEnds() {
        var throttle = NudgeThrottle()
        #expect(wrote(&throttle, 0))
        #expect(!wrote(&throttle, 1))
        #expect(!wrote(&throttle, gap / 2))
        #expect(throttle.owed && throttle.deadline == gap)
        #expect(!due(&throttle, gap - 1))
        #expect(due(&throttle, gap))
        #expect(!throttle.owed && throttle.deadline == nil)
        #expect(!due(&throttle, gap + 1))
        // The owed nudge started a new gap.
        #expect(!wrote(&throttle, gap + 1))
        #expect(throttle.deadline == 2 * gap)
    }

    /// A steady stream of writes: one nudge per gap, never more.
    @Test func aStreamOfWritesGivesOneNudgePerGap() {
        var throttle = NudgeThrottle()
        var sent = 0
        let step = gap / 50
        for now in stride(from: UInt64(0), to: 10 * gap, by: Int(step)) {
            if throttle.due(now: now) { sent += 1 }
            if throttle.wrote(now: now) { sent += 1 }
        }
        #expect(sent == 10)
        #expect(throttle.owed)
    }
}
