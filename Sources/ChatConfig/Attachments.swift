import Foundation

/// How a frontend moves attachment bytes (`attachments:`, CHAT_ATTACHMENTS).
public enum AttachmentsMode: String, Sendable, CaseIterable {
    /// Through the disk it shares with the files worker (`<dataDir>/staging`
    /// and `files/`): one host, or a shared filesystem.
    case local
    /// Over the bus in chunks (`file.chunk`, `file.read`): the frontend's
    /// host needs no access to the files worker's disk.
    case bus
}

extension ChatConfig {
    /// The mode in force: the configured one, else `local` where this host
    /// runs the files worker too (`run: all`) and `bus` where it does not.
    public var resolvedAttachments: AttachmentsMode {
        attachments ?? (runsFilesWorker ? .local : .bus)
    }

    /// This host's supervisor starts `files.0`: it runs the workers and
    /// `filesWorkers` is not 0. The broker hands a queue's commands round
    /// robin, so files workers on two hosts would each get some of an
    /// upload's chunks: every workers host but one says `filesWorkers: 0`.
    public var runsFilesWorker: Bool { run.runsWorkers && filesWorkers > 0 }
}

extension ChatConfig {
    /// Age past which a staging file is an abandoned upload: a request that
    /// streams the largest upload takes far less, and by age, not at
    /// start-up, because two frontends on one host share the directory
    /// during a handover (the new one must not sweep the old one's uploads).
    public static let abandonedUploadSeconds: TimeInterval = 3600

    /// Removes from `stagingDir` the uploads older than
    /// `abandonedUploadSeconds` (their frontend, or the files worker's,
    /// died mid-way: nothing else removes them) and `.stored` markers once no
    /// resend of their `file.store` can come. Returns the uploads' names.
    /// Run by the files worker when idle and, on a host without one, by the
    /// supervisor: over the bus the frontend host stages uploads too.
    public func sweepStaging(now: Date = Date()) -> [String] {
        let cutoff = now.addingTimeInterval(-Self.abandonedUploadSeconds)
        let markerCutoff = now.addingTimeInterval(-max(60, 2 * Double(requestTimeoutMilliseconds) / 1000))
        var removed: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: stagingDir)) ?? [] {
            let path = (stagingDir as NSString).appendingPathComponent(name)
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date else { continue }
            if name.hasSuffix(".stored") {
                if modified < markerCutoff { try? FileManager.default.removeItem(atPath: path) }
            } else if modified < cutoff, (try? FileManager.default.removeItem(atPath: path)) != nil {
                removed.append(name)
            }
        }
        return removed
    }
}
