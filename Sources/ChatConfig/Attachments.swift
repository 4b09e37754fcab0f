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
        attachments ?? (run.runsWorkers ? .local : .bus)
    }
}
