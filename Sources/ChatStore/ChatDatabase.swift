import ChatCore
import Foundation
import GRDB

/// The main database: users, rooms, participants, messages, read status, typing
/// state and chat sessions. Migrates in `init`, like GRDB's `AppDatabase`, over
/// any `DatabaseWriter`: a `DatabasePool` on the file in every process that
/// stores (`init(path:)`; SQLite serialises the writers, WAL lets readers run
/// beside them), or an in-memory `DatabaseQueue` in unit tests (`inMemory()`).
public final class ChatDatabase: Sendable {
    /// Reads and writes go through this: `writer.read { db in ... }`.
    public let writer: any DatabaseWriter

    /// `writer`, under the name it had when it was always a `DatabasePool`.
    public var pool: any DatabaseWriter { writer }

    /// Migrates `writer`'s database to the current schema. The writer should
    /// be configured with `ChatDatabase.configuration()` (the store's pragmas).
    public init(_ writer: any DatabaseWriter) throws {
        self.writer = writer
        try Self.migrator.migrate(writer)
    }

    /// Opens (creating it with mode 0600) the database file at `path` as a
    /// WAL-mode `DatabasePool`, and migrates it.
    public convenience init(path: String) throws {
        try Self.makePrivate(path)
        try self.init(DatabasePool(path: path, configuration: Self.configuration()))
    }

    /// A fresh, migrated database in memory, for tests.
    public static func inMemory() throws -> ChatDatabase {
        try ChatDatabase(DatabaseQueue(configuration: configuration()))
    }

    /// The connection settings every `ChatDatabase` runs with.
    public static func configuration() -> Configuration {
        var config = Configuration()
        // Several store workers share one file and SQLite has one writer: wait
        // for the lock rather than fail. 5 s is far above any batch we commit,
        // and well inside the frontend's 10 s deadline for a command.
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        return config
    }

    /// The database file exists with mode 0600 before SQLite opens it (SQLite
    /// would create it 0644 less the umask, and gives its WAL and SHM files the
    /// database's mode); WAL and SHM files left by an older version are narrowed.
    static func makePrivate(_ path: String) throws {
        guard !path.isEmpty, path != ":memory:", !path.hasPrefix("file:") else { return }
        try PrivateFiles.file(path)
        for suffix in ["-wal", "-shm", "-journal"] { PrivateFiles.narrow(path + suffix) }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE users (
                    id TEXT PRIMARY KEY NOT NULL,
                    sub TEXT NOT NULL UNIQUE,
                    email TEXT NOT NULL DEFAULT '',
                    display_name TEXT NOT NULL DEFAULT '',
                    profile_picture TEXT,
                    clerk_profile_image_url TEXT,
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE rooms (
                    id TEXT PRIMARY KEY NOT NULL,
                    name TEXT,
                    room_type TEXT NOT NULL DEFAULT 'group'
                        CHECK (room_type IN ('direct', 'group', 'project', 'public')),
                    created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    is_active INTEGER NOT NULL DEFAULT 1,
                    direct_user1 TEXT REFERENCES users(id) ON DELETE CASCADE,
                    direct_user2 TEXT REFERENCES users(id) ON DELETE CASCADE,
                    -- the seq of the room's newest message; the next one gets last_seq + 1
                    last_seq INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX rooms_type_active ON rooms(room_type, is_active);
                CREATE INDEX rooms_updated ON rooms(updated_at DESC);
                CREATE UNIQUE INDEX rooms_direct_pair ON rooms(direct_user1, direct_user2)
                    WHERE room_type = 'direct';
                CREATE TABLE room_participants (
                    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
                    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    joined_at INTEGER NOT NULL,
                    PRIMARY KEY (room_id, user_id)
                ) WITHOUT ROWID;
                CREATE INDEX participants_user ON room_participants(user_id, room_id);
                CREATE TABLE messages (
                    id TEXT PRIMARY KEY NOT NULL,
                    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    sender_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    content TEXT NOT NULL DEFAULT '',
                    message_type TEXT NOT NULL DEFAULT 'text',
                    file_attachment TEXT,
                    file_name TEXT,
                    file_size INTEGER,
                    timestamp INTEGER NOT NULL,
                    edited_at INTEGER,
                    -- strictly increases on every change (api-contract.md)
                    updated_at INTEGER NOT NULL,
                    is_deleted INTEGER NOT NULL DEFAULT 0,
                    reply_to TEXT REFERENCES messages(id) ON DELETE SET NULL,
                    -- [[emoji, [user ids]], ...] in first-reaction order
                    reactions TEXT NOT NULL DEFAULT '[]',
                    client_msg_id TEXT
                );
                CREATE UNIQUE INDEX messages_room_seq ON messages(room_id, seq);
                CREATE INDEX messages_sender ON messages(sender_id, timestamp);
                CREATE UNIQUE INDEX messages_client_msg_id ON messages(room_id, sender_id, client_msg_id)
                    WHERE client_msg_id IS NOT NULL;
                CREATE TABLE message_read_status (
                    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
                    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    read_at INTEGER NOT NULL,
                    PRIMARY KEY (message_id, user_id)
                ) WITHOUT ROWID;
                CREATE INDEX read_status_user ON message_read_status(user_id, message_id);
                CREATE TABLE typing_indicators (
                    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
                    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    is_typing INTEGER NOT NULL DEFAULT 0,
                    last_seen INTEGER NOT NULL,
                    PRIMARY KEY (room_id, user_id)
                ) WITHOUT ROWID;
                CREATE TABLE chat_sessions (
                    session_id TEXT PRIMARY KEY NOT NULL,
                    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    session_type TEXT NOT NULL DEFAULT 'web',
                    is_active INTEGER NOT NULL DEFAULT 1,
                    last_ping INTEGER NOT NULL,
                    connected_at INTEGER NOT NULL,
                    user_agent TEXT NOT NULL DEFAULT '',
                    ip_address TEXT
                );
                CREATE INDEX sessions_user_active ON chat_sessions(user_id, is_active);
                """)
        }
        migrator.registerMigration("v2-unread-counters") { db in
            // Unread counts without scanning a room's messages:
            // unread(room, user) = rooms.live_count - sent_count - read_count,
            // where live means not deleted and read_count counts others' live
            // messages the user read. Kept by Store on every write that moves them.
            try db.execute(sql: """
                ALTER TABLE rooms ADD COLUMN live_count INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE room_participants ADD COLUMN sent_count INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE room_participants ADD COLUMN read_count INTEGER NOT NULL DEFAULT 0;
                UPDATE rooms SET live_count = (SELECT COUNT(*) FROM messages m WHERE m.room_id = rooms.id AND m.is_deleted = 0);
                UPDATE room_participants SET
                    sent_count = (SELECT COUNT(*) FROM messages m WHERE m.room_id = room_participants.room_id
                                  AND m.sender_id = room_participants.user_id AND m.is_deleted = 0),
                    read_count = (SELECT COUNT(*) FROM message_read_status s JOIN messages m ON m.id = s.message_id
                                  WHERE s.user_id = room_participants.user_id AND m.room_id = room_participants.room_id
                                  AND m.is_deleted = 0 AND m.sender_id != room_participants.user_id);
                """)
        }
        migrator.registerMigration("v3-message-changes") { db in
            // Edits and deletions, in commit order, for the search index to
            // follow (new messages it follows by messages.rowid).
            try db.execute(sql: """
                CREATE TABLE message_changes (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id TEXT NOT NULL
                );
                """)
        }
        migrator.registerMigration("v4-session-frontend") { db in
            // Which frontend slot holds a session, so the next process in that
            // slot can close what a killed one left active.
            try db.execute(sql: "ALTER TABLE chat_sessions ADD COLUMN frontend TEXT")
        }
        migrator.registerMigration("v16-roles") { db in
            // Roles (Permissions.swift): a room's creator owns it, everyone
            // else is a member (a room whose creator left: its longest-standing
            // member); a direct room has two members. Announcement
            // rooms post_permission 'admins'. Pins on the message row, with
            // a partial index for a room's pins list (only pinned rows).
            try db.execute(sql: """
                ALTER TABLE room_participants ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
                UPDATE room_participants SET role = 'owner'
                    WHERE user_id = (SELECT r.created_by FROM rooms r WHERE r.id = room_participants.room_id AND r.room_type != 'direct');
                UPDATE room_participants SET role = 'owner'
                    WHERE user_id = (SELECT p.user_id FROM room_participants p WHERE p.room_id = room_participants.room_id ORDER BY p.joined_at, p.user_id LIMIT 1)
                      AND room_id IN (SELECT r.id FROM rooms r WHERE r.room_type <> 'direct'
                                      AND NOT EXISTS (SELECT 1 FROM room_participants o WHERE o.room_id = r.id AND o.role = 'owner'));
                ALTER TABLE rooms ADD COLUMN post_permission TEXT NOT NULL DEFAULT 'members';
                ALTER TABLE messages ADD COLUMN pinned_by TEXT REFERENCES users(id);
                ALTER TABLE messages ADD COLUMN pinned_at INTEGER;
                CREATE INDEX messages_pins ON messages(room_id, pinned_at) WHERE pinned_at IS NOT NULL;
                """)
        }
        migrator.registerMigration("v16-prefs") { db in
            try db.execute(sql: Self.v16Prefs)
        }
        migrator.registerMigration("v16-blocks") { db in
            // Who blocked whom. Keyed by blocker (the blocked list, the
            // history and search filters) and by blocked user (a message's
            // write finds the room's members who blocked its sender with
            // one probe). The email index serves the user lookup's exact match.
            try db.execute(sql: """
                CREATE TABLE user_blocks (
                    blocker_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    blocked_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (blocker_id, blocked_id)
                ) WITHOUT ROWID;
                CREATE INDEX user_blocks_blocked ON user_blocks(blocked_id, blocker_id);
                CREATE INDEX users_email_lower ON users(lower(email));
                """)
        }
        migrator.registerMigration("v16-webhooks") { db in
            // Issue 16's webhooks, the outbox and incoming webhooks (WebhookStore).
            try db.execute(sql: """
                CREATE TABLE webhooks (
                    id TEXT PRIMARY KEY NOT NULL,
                    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
                    url TEXT NOT NULL,
                    -- the subscribed events, comma-separated
                    events TEXT NOT NULL,
                    secret TEXT NOT NULL,
                    created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
                    created_at BIGINT NOT NULL
                );
                CREATE INDEX webhooks_room ON webhooks(room_id);
                -- The outbox: one row per delivery, written in the event's transaction.
                -- Due when next_at has passed; a claim moves next_at to the lease's end
                -- (lease names the claim), a 2xx deletes the row, failed = 1 keeps it.
                CREATE TABLE webhook_deliveries (
                    id TEXT PRIMARY KEY NOT NULL,
                    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
                    event TEXT NOT NULL,
                    body TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_at BIGINT NOT NULL,
                    failed INTEGER NOT NULL DEFAULT 0,
                    lease TEXT,
                    last_status INTEGER,
                    last_error TEXT
                );
                CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_at) WHERE failed = 0;
                CREATE INDEX webhook_deliveries_lease ON webhook_deliveries(lease) WHERE lease IS NOT NULL;
                CREATE INDEX webhook_deliveries_failed ON webhook_deliveries(webhook_id, next_at) WHERE failed = 1;
                CREATE TABLE incoming_webhooks (
                    id TEXT PRIMARY KEY NOT NULL,
                    room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    token_hash TEXT NOT NULL,
                    bot_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
                    created_at BIGINT NOT NULL
                );
                """)
        }
        migrator.registerMigration("v16-webhook-backoff") { db in
            try db.execute(sql: WebhookStore.pendingIndex)
        }
        // Calls (issue 17): rows, so that a call outlives any worker (Store+Calls.swift).
        migrator.registerMigration("v17-calls") { db in
            try db.execute(sql: CallStore.schema)
        }
        // End-to-end encrypted rooms (issue 17): the key directory, ciphertexts (Store+Encryption.swift).
        migrator.registerMigration("v18-encryption") { db in
            try db.execute(sql: EncryptionStore.schema)
        }
        return migrator
    }

    /// Mute, notification level and mentions (issue 16). Unread mentions are
    /// kept on write like unread counts: unread_mentions(room, user) =
    /// mention_count - mention_read_count, where mention_count counts the
    /// live messages of the room that mention the user and
    /// mention_read_count those of them the user read (Store+Prefs).
    /// `messages.mentions` is the message's mentioned ids, comma-separated
    /// (NULL: none); `mentions` is the same per user, for the feed.
    static let v16Prefs = """
        ALTER TABLE room_participants ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE room_participants ADD COLUMN muted_until INTEGER;
        ALTER TABLE room_participants ADD COLUMN notification_level TEXT NOT NULL DEFAULT 'all'
            CHECK (notification_level IN ('all', 'mentions', 'none'));
        ALTER TABLE room_participants ADD COLUMN mention_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE room_participants ADD COLUMN mention_read_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN mentions TEXT;
        CREATE TABLE mentions (
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (user_id, message_id)
        ) WITHOUT ROWID;
        CREATE INDEX mentions_user_created ON mentions(user_id, created_at DESC, message_id DESC);
        CREATE INDEX mentions_user_room ON mentions(user_id, room_id);
        CREATE INDEX mentions_message ON mentions(message_id);
        """
}
