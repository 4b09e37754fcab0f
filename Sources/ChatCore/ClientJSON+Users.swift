extension ClientJSON {
    /// A user object on its own (`users/me`, the lookup, blocks).
    public static func encode(_ user: User) -> [UInt8] {
        var w = JSONWriter(capacity: 160)
        write(user, to: &w)
        return w.bytes
    }
}
