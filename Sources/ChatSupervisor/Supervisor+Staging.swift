import ChatConfig
import Logging

extension Supervisor {
    /// `ChatConfig.sweepStaging` on a host without the files worker (which
    /// sweeps its own): by age, so a frontend's upload in progress, or one
    /// of a handover's two frontends sharing the directory, is left alone.
    func sweepStaging() {
        for name in config.sweepStaging() { logger.info("removed an abandoned upload", metadata: ["staging": "\(name)"]) }
    }
}
