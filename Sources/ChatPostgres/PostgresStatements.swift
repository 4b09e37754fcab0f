import PostgresNIO

/// The hot statements, prepared once per connection (`PreparedStatement`):
/// every command's access check, a room's page of messages with their
/// readers, and the room list's rooms. PostgreSQL parses and plans each on
/// a connection's first use, not on every call. The names carry a version:
/// a statement whose SQL changes gets a new name.
enum Statements {
    /// A room's type and state, and `$1`'s role in room `$2` (null: not a member).
    struct RoomInfo: PreparedStatement {
        static let name = "chatd_room_info_v2"
        /// What `PostgresTransaction.roomInfo(_:id:)` reads, from `rooms r`.
        static let columns = """
            r.room_type, r.is_active, r.created_by, r.post_permission,
            (SELECT p.role FROM room_participants p WHERE p.room_id = r.id AND p.user_id = $1) AS role
            """
        static let sql = "SELECT \(columns) FROM rooms r WHERE r.id = $2"
        static let bindingDataTypes: [PostgresDataType] = [.text, .text]
        var values: [PostgresValue]
    }

    /// A message page's first statement: `RoomInfo`'s columns for `$1` in
    /// room `$2`, the room's last seq, and whether `$1` blocked anyone.
    struct PageHead: PreparedStatement {
        static let name = "chatd_page_head_v1"
        static let sql = """
            SELECT \(RoomInfo.columns), r.last_seq, EXISTS (SELECT 1 FROM user_blocks WHERE blocker_id = $1) AS blocks
            FROM rooms r WHERE r.id = $2
            """
        static let bindingDataTypes: [PostgresDataType] = [.text, .text]
        var values: [PostgresValue]
    }

    /// Room `$1`'s messages with seq in ($3, $2], newest first.
    struct MessagePage: PreparedStatement {
        static let name = "chatd_message_page_v2"
        static let sql = """
            SELECT \(PostgresTransaction.messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id
            WHERE m.room_id = $1 AND m.seq <= $2 AND m.seq > $3 ORDER BY m.seq DESC
            """
        static let bindingDataTypes: [PostgresDataType] = [.text, .int8, .int8]
        var values: [PostgresValue]
    }

    /// The messages of ids `$1`.
    struct MessagesByID: PreparedStatement {
        static let name = "chatd_messages_by_id_v2"
        static let sql = """
            SELECT \(PostgresTransaction.messageColumns) FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.id = ANY($1)
            """
        static let bindingDataTypes: [PostgresDataType] = [.textArray]
        var values: [PostgresValue]
    }

    /// Who read the messages of ids `$1`, in reading order.
    struct ReadBy: PreparedStatement {
        static let name = "chatd_read_by_v16"
        /// read_at 0: a message hidden from a user who blocked its sender, not read (v16-blocks).
        static let sql = """
            SELECT s.message_id, \(PostgresTransaction.userColumns) FROM message_read_status s JOIN users u ON u.id = s.user_id
            WHERE s.message_id = ANY($1) AND s.read_at > 0 ORDER BY s.read_at, u.id
            """
        static let bindingDataTypes: [PostgresDataType] = [.textArray]
        var values: [PostgresValue]
    }

    // The room list's statements join `unnest($1)` rather than filter by
    // `= ANY($1)`: prepared, they run a generic plan, and the generic plan
    // of `r.id = ANY($1)` (the array's length unknown) joined every room of
    // the page with every membership of the viewer, 2-4x the time of the
    // unnest join's index probes (benchmarks.md §16c).

    /// Rooms of ids `$1` with viewer `$2`'s unread count and role.
    struct Rooms: PreparedStatement {
        static let name = "chatd_rooms_v4"
        // viewer_blocks (the same on every row, evaluated once): whether the
        // list needs the blocked senders' last_message check, a round trip
        // of its own that a viewer who blocked nobody is spared.
        static let sql = """
            SELECT r.id, r.name, r.room_type, r.created_by, r.created_at, r.updated_at, r.is_active, r.direct_user1, r.direct_user2,
                   r.live_count - COALESCE(p.sent_count, 0) - COALESCE(p.read_count, 0) AS unread,
                   r.post_permission, p.role AS my_role,
                   p.muted, p.muted_until, p.notification_level, p.mention_count - p.mention_read_count AS unread_mentions,
                   EXISTS (SELECT 1 FROM user_blocks WHERE blocker_id = $2) AS viewer_blocks
            FROM unnest($1::text[]) AS wanted(id) JOIN rooms r ON r.id = wanted.id
            LEFT JOIN room_participants p ON p.room_id = r.id AND p.user_id = $2
            """
        static let bindingDataTypes: [PostgresDataType] = [.textArray, .text]
        var values: [PostgresValue]
    }

    /// The members of rooms `$1`, by room and joining order.
    struct RoomParticipants: PreparedStatement {
        static let name = "chatd_room_participants_v2"
        static let sql = """
            SELECT p.room_id, \(PostgresTransaction.userColumns)
            FROM unnest($1::text[]) AS wanted(id) JOIN room_participants p ON p.room_id = wanted.id JOIN users u ON u.id = p.user_id
            ORDER BY p.room_id, p.joined_at, u.id
            """
        static let bindingDataTypes: [PostgresDataType] = [.textArray]
        var values: [PostgresValue]
    }

    /// The last live message of each room of `$1`.
    struct LastMessages: PreparedStatement {
        static let name = "chatd_last_messages_v2"
        static let sql = """
            SELECT m.room_id, m.id, m.content, m.timestamp, \(PostgresTransaction.userColumns)
            FROM unnest($1::text[]) AS wanted(id) CROSS JOIN LATERAL (
                SELECT * FROM messages WHERE room_id = wanted.id AND NOT is_deleted ORDER BY seq DESC LIMIT 1) m
            JOIN users u ON u.id = m.sender_id
            """
        static let bindingDataTypes: [PostgresDataType] = [.textArray]
        var values: [PostgresValue]
    }
}
