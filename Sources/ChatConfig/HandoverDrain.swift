extension ChatConfig {
    /// How long a frontend that handed WebSockets over drains its bus at its
    /// stop: the command deadline. A socket moves with commands unanswered
    /// past the handover's 2 s drain bound; they live only in this process,
    /// which resends them until answered or their deadline (each runs from
    /// its send, before the handover ended), so nothing a moved client sent
    /// is lost. The supervisor's SIGKILL of a retired frontend must come
    /// later than its SIGTERM plus this (and its HTTP shutdown).
    public var handoverDrainSeconds: Double { Double(requestTimeoutMilliseconds) / 1_000 }
}
