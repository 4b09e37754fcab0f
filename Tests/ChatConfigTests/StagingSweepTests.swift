import ChatConfig
import Foundation
import Testing

/// The staging sweep that the files worker runs when idle and the
/// supervisor of a host without one runs each minute.
@Suite struct StagingSweepTests {
    @Test func onlyUploadsAnHourOldAndSpentMarkersAreRemoved() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sweep-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try await ChatConfig.load(file: nil, environment: ["CHAT_DATA_DIR": dir, "CHAT_RUN": "frontend", "CHAT_BUS": "tcp://127.0.0.1:7400"])
        try FileManager.default.createDirectory(atPath: config.stagingDir, withIntermediateDirectories: true)
        let now = Date()
        let ages: [String: TimeInterval] = [
            "abandoned": ChatConfig.abandonedUploadSeconds + 60,
            // An upload in progress (its frontend streams it), or one of the
            // other frontend's during a handover: young, kept.
            "in-progress": 5,
            "abandoned.stored": 300,
            "fresh.stored": 5,
        ]
        for (name, age) in ages {
            let path = config.stagingDir + "/" + name
            #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
            try FileManager.default.setAttributes([.modificationDate: now.addingTimeInterval(-age)], ofItemAtPath: path)
        }
        #expect(config.sweepStaging(now: now) == ["abandoned"])
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: config.stagingDir)) == ["in-progress", "fresh.stored"])
        // A host just started sweeps by age too: nothing young goes.
        #expect(config.sweepStaging(now: now).isEmpty)
    }
}
