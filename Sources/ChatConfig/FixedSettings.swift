extension ChatConfig {
    /// The settings a reload does not apply (`listen`, the directories, the
    /// bus, `run`, `logFormat`, `metrics`), as the `CHAT_*` variables that win over the file. The
    /// supervisor sets them in every child's environment from its running
    /// configuration, so that a child started after the file changed them
    /// (a scale-up, a crash restart, a standby, a reload's restart) still
    /// agrees with its siblings and with the supervisor's sockets; the
    /// change takes effect at the service's next start.
    public var fixedEnvironment: [String: String] {
        [
            "CHAT_LISTEN": listen,
            "CHAT_DATA_DIR": dataDir,
            // Resolved: with none configured, a `runtimeDir` added to the
            // file must not move a child's sockets away from `<dataDir>/run`.
            "CHAT_RUNTIME_DIR": resolvedRuntimeDir,
            // Empty reads as none (ipc in the runtime directory).
            "CHAT_BUS": bus ?? "",
            "CHAT_BUS_INSECURE": busInsecure ? "true" : "false",
            // The broker's sockets were bound with this host's key: a child
            // must present the same one. (The peers file may change: a reload
            // restarts the children with it and gives the broker the new list.)
            "CHAT_BUS_KEY": busKeyFile ?? "",
            "CHAT_RUN": run.rawValue,
            // Comma-separated, as the environment writes an array; empty: none.
            "CHAT_PEERS": peers.joined(separator: ","),
            "CHAT_HOST": host,
            // One format for every process's lines in the one stream.
            "CHAT_LOG_FORMAT": logFormat.rawValue,
            // Reports, the supervisor's merge and /metrics are set up once, at
            // the start of each process: all on or all off, never a mix.
            "CHAT_METRICS": metrics ? "true" : "false",
        ]
    }

    /// This configuration with the settings of `fixedEnvironment` taken from
    /// `running`: what a child started now reads.
    public func keepingFixedSettings(of running: ChatConfig) -> ChatConfig {
        var kept = self
        kept.listen = running.listen
        kept.dataDir = running.dataDir
        kept.runtimeDir = running.runtimeDir
        kept.bus = running.bus
        kept.busInsecure = running.busInsecure
        kept.busKeyFile = running.busKeyFile
        kept.run = running.run
        kept.peers = running.peers
        kept.host = running.host
        kept.logFormat = running.logFormat
        kept.metrics = running.metrics
        return kept
    }
}
