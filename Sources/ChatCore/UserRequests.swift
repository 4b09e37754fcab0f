extension Requests {
    /// `users/?q=`: the text looked up (not blank).
    public struct UserSearch: Codable, Sendable {
        public var query: String

        public init(query: String) { self.query = query }
    }

    /// A command about one other user (block, unblock).
    public struct UserRef: Codable, Sendable {
        public var userID: String

        public init(userID: String) { self.userID = userID }
    }

    /// `users/blocked/`.
    public struct BlockedList: Codable, Sendable {
        public var page: Page

        public init(page: Page) { self.page = page }
    }
}

extension Validation {
    /// Most users a lookup answers with (api-contract.md "Users").
    public static let maxUserLookup = 20
}
