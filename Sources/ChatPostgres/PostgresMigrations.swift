import ChatStore
import Foundation
import Logging
import PostgresNIO

/// The PostgreSQL schema, as SQLite's (ChatDatabase's migrations) in
/// PostgreSQL's types: the same tables, keys and counters; timestamps are
/// microseconds in BIGINT, as in SQLite, so the JSON is identical.
///
/// Migrations are applied in order, each in its own transaction with its
/// row in `chatd_migrations`, under an advisory lock: two hosts that start
/// at once apply each one once.
enum PostgresMigrations {
    /// Any fixed number: the lock that serialises migrators.
    static let lockKey: Int64 = 0x6368_6174_64  // "chatd"

    static let all: [(name: String, sql: String)] = [
        ("v1", v1),
        // Search (pg_trgm): the search worker's own table, filled from the
        // messages by `xact` (PostgresSearchIndex), off the write path.
        ("v2-search", v2Search),
        // A message stored in one round trip (PostgresTransaction.createMessage).
        ("v3-store-message", v3StoreMessage),
        // Roles, announcement rooms and pins (ChatStore's Permissions.swift).
        ("v16-roles", v16Roles),
        // Mute, notification level, mentions (issue 16), as SQLite's v16-prefs.
        ("v16-prefs", v16Prefs),
        // Blocks (PostgresTransaction+Blocks).
        ("v16-blocks", v16Blocks),
        // The message write with issue 16's checks: announcement rooms and blocks.
        ("v16-store-message", v16StoreMessage),
        // Issue 16's webhooks, the outbox and incoming webhooks (ChatStore's WebhookStore).
        ("v16-webhooks", v16Webhooks),
        // A failing webhook's pending deliveries wait out its backoff (WebhookStore.deliveryFailed).
        ("v16-webhook-backoff", WebhookStore.pendingIndex),
        // The same message write in a statement fewer, with generic plans (benchmarks.md §16c).
        ("v16-store-message-2", v16StoreMessage2),
        // Calls (issue 17), as SQLite's: ChatStore's CallStore.
        ("v17-calls", CallStore.schema),
        // End-to-end encrypted rooms (issue 17), as SQLite's: ChatStore's EncryptionStore.
        ("v18-encryption", EncryptionStore.schema),
    ]

    static let v16Webhooks = """
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
        """

    static func migrate(_ connection: PooledConnection, logger: Logger) throws {
        for (name, sql) in all {
            try connection.run("BEGIN")
            do {
                // Not the connection's 4 s lock_timeout for the advisory lock:
                // hosts starting at once wait for each other's migrations, which
                // can take longer. Then 4 s again for the migration's own DDL: its
                // ACCESS EXCLUSIVE request, queued behind a long transaction, would
                // stall every statement on that table meanwhile; failing the start
                // (retried by systemd) is better than hanging the service.
                try connection.run("SET LOCAL lock_timeout = 0")
                try connection.query("SELECT pg_advisory_xact_lock($1)", [.int(lockKey)])
                try connection.run("SET LOCAL lock_timeout = '4s'")
                // Under the lock: two migrators creating it at once collide on
                // the catalog's unique index (23505) even with IF NOT EXISTS.
                try connection.run("CREATE TABLE IF NOT EXISTS chatd_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
                let done = try connection.query("SELECT 1 FROM chatd_migrations WHERE name = $1", [.text(name)]).rows.isEmpty == false
                if !done {
                    // One statement at a time (the extended protocol takes one): they end with `;` at a line's end.
                    for statement in statements(sql) where !statement.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                        try connection.run(statement)
                    }
                    try connection.query("INSERT INTO chatd_migrations (name) VALUES ($1)", [.text(name)])
                    logger.info("migrated", metadata: ["migration": "\(name)"])
                }
                try connection.run("COMMIT")
            } catch {
                try? connection.run("ROLLBACK")
                throw error
            }
        }
    }

    /// A migration's statements: split where `;` ends a line, except inside
    /// a function's `$$`-quoted body.
    static func statements(_ sql: String) -> [String] {
        var statements: [String] = []
        var open = ""
        for part in sql.components(separatedBy: ";\n") {
            open += open.isEmpty ? part : ";\n" + part
            if open.components(separatedBy: "$$").count % 2 == 1 {
                statements.append(open)
                open = ""
            }
        }
        if !open.isEmpty { statements.append(open) }
        return statements
    }

    /// A message stored in one statement, with the decisions of
    /// `createMessage` before it: a resend by id, the room's row lock (seqs
    /// gap-free and unique across writers), the sender's membership, an
    /// active room, a reply in this room, the id or `client_msg_id` stored
    /// meanwhile under the lock, then the seq, the row and the counters.
    /// A constraint's refusal is an error, as it was statement by statement.
    static let v3StoreMessage = """
        CREATE OR REPLACE FUNCTION chatd_store_message(
            p_id TEXT, p_room TEXT, p_sender TEXT, p_content TEXT, p_type TEXT, p_now BIGINT, p_reply_to TEXT,
            p_client_msg_id TEXT, p_file TEXT, p_file_name TEXT, p_file_size BIGINT,
            OUT outcome TEXT, OUT message_seq BIGINT, OUT stored_id TEXT)
        LANGUAGE plpgsql AS $$
        DECLARE
            room_active BOOLEAN;
            room_member BOOLEAN;
        BEGIN
            stored_id := p_id;
            IF EXISTS (SELECT 1 FROM messages WHERE id = p_id) THEN
                outcome := 'resent';
                RETURN;
            END IF;
            SELECT r.is_active, EXISTS (SELECT 1 FROM room_participants p WHERE p.room_id = r.id AND p.user_id = p_sender)
                INTO room_active, room_member FROM rooms r WHERE r.id = p_room FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                outcome := 'no_room';
            ELSIF NOT room_member THEN
                outcome := 'forbidden';
            ELSIF NOT room_active THEN
                outcome := 'inactive';
            ELSIF p_reply_to IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages WHERE id = p_reply_to AND room_id = p_room) THEN
                outcome := 'bad_reply';
            END IF;
            IF outcome IS NOT NULL THEN
                RETURN;
            END IF;
            SELECT m.id INTO stored_id FROM messages m
                WHERE m.id = p_id OR (m.room_id = p_room AND m.sender_id = p_sender AND m.client_msg_id = p_client_msg_id)
                ORDER BY m.id = p_id DESC LIMIT 1;
            IF FOUND THEN
                outcome := CASE WHEN stored_id = p_id THEN 'resent' ELSE 'duplicate' END;
                RETURN;
            END IF;
            stored_id := p_id;
            UPDATE rooms SET last_seq = last_seq + 1, live_count = live_count + 1, updated_at = GREATEST(updated_at + 1, p_now)
                WHERE id = p_room RETURNING last_seq INTO message_seq;
            UPDATE room_participants SET sent_count = sent_count + 1 WHERE room_id = p_room AND user_id = p_sender;
            INSERT INTO messages (id, room_id, seq, sender_id, content, message_type, timestamp, updated_at, reply_to,
                                  client_msg_id, file_attachment, file_name, file_size)
                VALUES (p_id, p_room, message_seq, p_sender, p_content, p_type, p_now, p_now, p_reply_to,
                        p_client_msg_id, p_file, p_file_name, p_file_size);
            outcome := 'created';
        END
        $$;
        """

    /// Blocks, as SQLite's v16-blocks: keyed by blocker and by blocked user.
    static let v16Blocks = """
        CREATE TABLE user_blocks (
            blocker_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            blocked_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (blocker_id, blocked_id)
        );
        CREATE INDEX user_blocks_blocked ON user_blocks(blocked_id, blocker_id);
        CREATE INDEX users_email_lower ON users(lower(email));
        """

    /// v3's `chatd_store_message` with issue 16's steps, in the order of
    /// SQLite's `createMessage`: in an announcement room (`post_permission`
    /// 'admins') only the roles of Permissions.table's `postInAnnouncement`
    /// row post (`not_allowed`; the engine tests check the two agree); a direct
    /// room with a block between its two members refuses the message
    /// (`blocked`), and the room's members who blocked the sender come back
    /// in `hidden_from`, their read status of the message written with
    /// read_at 0 (hidden, so it never counts as unread for them; `read_by`
    /// leaves those rows out). Both are index probes of `user_blocks` that
    /// find nothing when nobody blocked anyone. Its OUT columns change, so
    /// it is dropped and created again rather than replaced.
    static let v16StoreMessage = """
        DROP FUNCTION IF EXISTS chatd_store_message(TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT, TEXT, BIGINT);
        CREATE FUNCTION chatd_store_message(
            p_id TEXT, p_room TEXT, p_sender TEXT, p_content TEXT, p_type TEXT, p_now BIGINT, p_reply_to TEXT,
            p_client_msg_id TEXT, p_file TEXT, p_file_name TEXT, p_file_size BIGINT,
            OUT outcome TEXT, OUT message_seq BIGINT, OUT stored_id TEXT, OUT hidden_from TEXT[])
        LANGUAGE plpgsql AS $$
        DECLARE
            room_active BOOLEAN;
            room_kind TEXT;
            room_posting TEXT;
            member_role TEXT;
        BEGIN
            stored_id := p_id;
            IF EXISTS (SELECT 1 FROM messages WHERE id = p_id) THEN
                outcome := 'resent';
                RETURN;
            END IF;
            SELECT r.is_active, r.room_type, r.post_permission,
                   (SELECT p.role FROM room_participants p WHERE p.room_id = r.id AND p.user_id = p_sender)
                INTO room_active, room_kind, room_posting, member_role FROM rooms r WHERE r.id = p_room FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                outcome := 'no_room';
            ELSIF member_role IS NULL THEN
                outcome := 'forbidden';
            ELSIF room_posting = 'admins' AND member_role NOT IN ('owner', 'admin') THEN
                outcome := 'not_allowed';
            ELSIF NOT room_active THEN
                outcome := 'inactive';
            ELSIF room_kind = 'direct' AND EXISTS (
                SELECT 1 FROM room_participants p JOIN user_blocks b
                    ON (b.blocker_id = p.user_id AND b.blocked_id = p_sender) OR (b.blocker_id = p_sender AND b.blocked_id = p.user_id)
                WHERE p.room_id = p_room AND p.user_id <> p_sender) THEN
                outcome := 'blocked';
            ELSIF p_reply_to IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages WHERE id = p_reply_to AND room_id = p_room) THEN
                outcome := 'bad_reply';
            END IF;
            IF outcome IS NOT NULL THEN
                RETURN;
            END IF;
            SELECT m.id INTO stored_id FROM messages m
                WHERE m.id = p_id OR (m.room_id = p_room AND m.sender_id = p_sender AND m.client_msg_id = p_client_msg_id)
                ORDER BY m.id = p_id DESC LIMIT 1;
            IF FOUND THEN
                outcome := CASE WHEN stored_id = p_id THEN 'resent' ELSE 'duplicate' END;
                RETURN;
            END IF;
            stored_id := p_id;
            UPDATE rooms SET last_seq = last_seq + 1, live_count = live_count + 1, updated_at = GREATEST(updated_at + 1, p_now)
                WHERE id = p_room RETURNING last_seq INTO message_seq;
            UPDATE room_participants SET sent_count = sent_count + 1 WHERE room_id = p_room AND user_id = p_sender;
            INSERT INTO messages (id, room_id, seq, sender_id, content, message_type, timestamp, updated_at, reply_to,
                                  client_msg_id, file_attachment, file_name, file_size)
                VALUES (p_id, p_room, message_seq, p_sender, p_content, p_type, p_now, p_now, p_reply_to,
                        p_client_msg_id, p_file, p_file_name, p_file_size);
            SELECT array_agg(b.blocker_id) INTO hidden_from FROM user_blocks b
                JOIN room_participants p ON p.room_id = p_room AND p.user_id = b.blocker_id
                WHERE b.blocked_id = p_sender;
            IF hidden_from IS NOT NULL THEN
                INSERT INTO message_read_status (message_id, user_id, read_at) SELECT p_id, unnest(hidden_from), 0;
                UPDATE room_participants SET read_count = read_count + 1 WHERE room_id = p_room AND user_id = ANY(hidden_from);
            END IF;
            outcome := 'created';
        END
        $$;
        """

    /// v16-store-message with its blockers read by the room's counter update
    /// (one statement fewer a message, as many as before issue 16), and its
    /// plans generic. The blockers must come from a statement that starts
    /// after the room's lock is held: `block` takes the shared rooms' locks
    /// first, so a block committed while this waited for the lock is in that
    /// statement's snapshot (PostgresRaceTests), where it would not be in the
    /// locking select's. Generic plans: every statement here looks rows up by
    /// key, where a custom plan is no better, yet PL/pgSQL kept planning some
    /// of them anew at every call (benchmarks.md §16c).
    static let v16StoreMessage2 = """
        CREATE OR REPLACE FUNCTION chatd_store_message(
            p_id TEXT, p_room TEXT, p_sender TEXT, p_content TEXT, p_type TEXT, p_now BIGINT, p_reply_to TEXT,
            p_client_msg_id TEXT, p_file TEXT, p_file_name TEXT, p_file_size BIGINT,
            OUT outcome TEXT, OUT message_seq BIGINT, OUT stored_id TEXT, OUT hidden_from TEXT[])
        LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
        DECLARE
            room_active BOOLEAN;
            room_kind TEXT;
            room_posting TEXT;
            member_role TEXT;
        BEGIN
            stored_id := p_id;
            IF EXISTS (SELECT 1 FROM messages WHERE id = p_id) THEN
                outcome := 'resent';
                RETURN;
            END IF;
            SELECT r.is_active, r.room_type, r.post_permission,
                   (SELECT p.role FROM room_participants p WHERE p.room_id = r.id AND p.user_id = p_sender)
                INTO room_active, room_kind, room_posting, member_role FROM rooms r WHERE r.id = p_room FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                outcome := 'no_room';
            ELSIF member_role IS NULL THEN
                outcome := 'forbidden';
            ELSIF room_posting = 'admins' AND member_role NOT IN ('owner', 'admin') THEN
                outcome := 'not_allowed';
            ELSIF NOT room_active THEN
                outcome := 'inactive';
            ELSIF room_kind = 'direct' AND EXISTS (
                SELECT 1 FROM room_participants p JOIN user_blocks b
                    ON (b.blocker_id = p.user_id AND b.blocked_id = p_sender) OR (b.blocker_id = p_sender AND b.blocked_id = p.user_id)
                WHERE p.room_id = p_room AND p.user_id <> p_sender) THEN
                outcome := 'blocked';
            ELSIF p_reply_to IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages WHERE id = p_reply_to AND room_id = p_room) THEN
                outcome := 'bad_reply';
            END IF;
            IF outcome IS NOT NULL THEN
                RETURN;
            END IF;
            SELECT m.id INTO stored_id FROM messages m
                WHERE m.id = p_id OR (m.room_id = p_room AND m.sender_id = p_sender AND m.client_msg_id = p_client_msg_id)
                ORDER BY m.id = p_id DESC LIMIT 1;
            IF FOUND THEN
                outcome := CASE WHEN stored_id = p_id THEN 'resent' ELSE 'duplicate' END;
                RETURN;
            END IF;
            stored_id := p_id;
            UPDATE rooms SET last_seq = last_seq + 1, live_count = live_count + 1, updated_at = GREATEST(updated_at + 1, p_now)
                WHERE id = p_room
                RETURNING last_seq, (SELECT array_agg(b.blocker_id) FROM user_blocks b
                                     JOIN room_participants p ON p.room_id = p_room AND p.user_id = b.blocker_id
                                     WHERE b.blocked_id = p_sender)
                INTO message_seq, hidden_from;
            UPDATE room_participants SET sent_count = sent_count + 1 WHERE room_id = p_room AND user_id = p_sender;
            INSERT INTO messages (id, room_id, seq, sender_id, content, message_type, timestamp, updated_at, reply_to,
                                  client_msg_id, file_attachment, file_name, file_size)
                VALUES (p_id, p_room, message_seq, p_sender, p_content, p_type, p_now, p_now, p_reply_to,
                        p_client_msg_id, p_file, p_file_name, p_file_size);
            IF hidden_from IS NOT NULL THEN
                INSERT INTO message_read_status (message_id, user_id, read_at) SELECT p_id, unnest(hidden_from), 0;
                UPDATE room_participants SET read_count = read_count + 1 WHERE room_id = p_room AND user_id = ANY(hidden_from);
            END IF;
            outcome := 'created';
        END
        $$;
        """

    static let v16Roles = """
        ALTER TABLE room_participants ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
        UPDATE room_participants p SET role = 'owner' FROM rooms r
            WHERE r.id = p.room_id AND r.room_type <> 'direct' AND p.user_id = r.created_by;
        UPDATE room_participants SET role = 'owner'
            WHERE user_id = (SELECT p.user_id FROM room_participants p WHERE p.room_id = room_participants.room_id ORDER BY p.joined_at, p.user_id LIMIT 1)
              AND room_id IN (SELECT r.id FROM rooms r WHERE r.room_type <> 'direct'
                              AND NOT EXISTS (SELECT 1 FROM room_participants o WHERE o.room_id = r.id AND o.role = 'owner'));
        ALTER TABLE rooms ADD COLUMN post_permission TEXT NOT NULL DEFAULT 'members';
        ALTER TABLE messages ADD COLUMN pinned_by TEXT REFERENCES users(id);
        ALTER TABLE messages ADD COLUMN pinned_at BIGINT;
        CREATE INDEX messages_pins ON messages(room_id, pinned_at) WHERE pinned_at IS NOT NULL;
        """

    /// unread_mentions(room, user) = mention_count - mention_read_count, kept
    /// on write like unread_count (PostgresTransaction+Prefs).
    static let v16Prefs = """
        ALTER TABLE room_participants ADD COLUMN muted BOOLEAN NOT NULL DEFAULT FALSE;
        ALTER TABLE room_participants ADD COLUMN muted_until BIGINT;
        ALTER TABLE room_participants ADD COLUMN notification_level TEXT NOT NULL DEFAULT 'all'
            CHECK (notification_level IN ('all', 'mentions', 'none'));
        ALTER TABLE room_participants ADD COLUMN mention_count BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE room_participants ADD COLUMN mention_read_count BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN mentions TEXT;
        CREATE TABLE mentions (
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (user_id, message_id)
        );
        CREATE INDEX mentions_user_created ON mentions(user_id, created_at DESC, message_id DESC);
        CREATE INDEX mentions_user_room ON mentions(user_id, room_id);
        CREATE INDEX mentions_message ON mentions(message_id);
        """

    static let v1 = """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            sub TEXT NOT NULL UNIQUE,
            email TEXT NOT NULL DEFAULT '',
            display_name TEXT NOT NULL DEFAULT '',
            profile_picture TEXT,
            clerk_profile_image_url TEXT,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE rooms (
            id TEXT PRIMARY KEY,
            name TEXT,
            room_type TEXT NOT NULL DEFAULT 'group' CHECK (room_type IN ('direct', 'group', 'project', 'public')),
            created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            is_active BOOLEAN NOT NULL DEFAULT TRUE,
            direct_user1 TEXT REFERENCES users(id) ON DELETE CASCADE,
            direct_user2 TEXT REFERENCES users(id) ON DELETE CASCADE,
            -- the seq of the room's newest message; the next one takes last_seq + 1 under this row's lock
            last_seq BIGINT NOT NULL DEFAULT 0,
            live_count BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX rooms_type_active ON rooms(room_type, is_active);
        CREATE INDEX rooms_updated ON rooms(updated_at DESC);
        CREATE UNIQUE INDEX rooms_direct_pair ON rooms(direct_user1, direct_user2) WHERE room_type = 'direct';
        CREATE TABLE room_participants (
            room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            joined_at BIGINT NOT NULL,
            sent_count BIGINT NOT NULL DEFAULT 0,
            read_count BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (room_id, user_id)
        );
        CREATE INDEX participants_user ON room_participants(user_id, room_id);
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            sender_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            content TEXT NOT NULL DEFAULT '',
            message_type TEXT NOT NULL DEFAULT 'text',
            file_attachment TEXT,
            file_name TEXT,
            file_size BIGINT,
            timestamp BIGINT NOT NULL,
            edited_at BIGINT,
            updated_at BIGINT NOT NULL,
            is_deleted BOOLEAN NOT NULL DEFAULT FALSE,
            reply_to TEXT REFERENCES messages(id) ON DELETE SET NULL,
            reactions TEXT NOT NULL DEFAULT '[]',
            client_msg_id TEXT,
            -- the transaction that stored, edited or deleted the content last: the search index's watermark follows it
            xact XID8 NOT NULL DEFAULT pg_current_xact_id()
        );
        CREATE UNIQUE INDEX messages_room_seq ON messages(room_id, seq);
        CREATE INDEX messages_sender ON messages(sender_id, timestamp);
        CREATE UNIQUE INDEX messages_client_msg_id ON messages(room_id, sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
        CREATE TABLE message_read_status (
            message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            read_at BIGINT NOT NULL,
            PRIMARY KEY (message_id, user_id)
        );
        CREATE INDEX read_status_user ON message_read_status(user_id, message_id);
        CREATE TABLE typing_indicators (
            room_id TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            is_typing BOOLEAN NOT NULL DEFAULT FALSE,
            last_seen BIGINT NOT NULL,
            PRIMARY KEY (room_id, user_id)
        );
        CREATE TABLE chat_sessions (
            session_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            session_type TEXT NOT NULL DEFAULT 'web',
            is_active BOOLEAN NOT NULL DEFAULT TRUE,
            last_ping BIGINT NOT NULL,
            connected_at BIGINT NOT NULL,
            user_agent TEXT NOT NULL DEFAULT '',
            ip_address TEXT,
            frontend TEXT
        );
        CREATE INDEX sessions_user_active ON chat_sessions(user_id, is_active);
        """

    static let v2Search = """
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX messages_xact ON messages(xact, id);
        CREATE TABLE search_docs (
            message_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL,
            sender_id TEXT NOT NULL,
            timestamp BIGINT NOT NULL,
            content TEXT NOT NULL
        );
        CREATE INDEX search_docs_room_time ON search_docs(room_id, timestamp);
        CREATE INDEX search_docs_content ON search_docs USING gin (content gin_trgm_ops);
        -- the search worker's watermark: every message with (xact, id) below it is indexed
        CREATE TABLE search_state (
            id INT PRIMARY KEY CHECK (id = 1),
            xact XID8 NOT NULL,
            message_id TEXT NOT NULL
        );
        INSERT INTO search_state VALUES (1, '0', '');
        """
}
