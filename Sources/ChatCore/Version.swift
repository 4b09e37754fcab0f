/// chatd's version, printed by `chatd --version` and `chatd version`; the
/// one place it is written.
public enum ChatdVersion {
    public static let version = "0.1.0"
}
