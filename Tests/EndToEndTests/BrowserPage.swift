import ChatCore
import ChatTesting
import Foundation
import Testing

/// The web client in one browser, found by its DOM contract
/// (docs/webclient.md): the steps the browser tests share.
struct ClientPage {
    let browser: BrowserSession
    let server: TestServer

    var origin: String { "http://127.0.0.1:\(server.port)" }

    /// Opens `/` and waits for the sign-in form.
    func open() throws {
        try browser.navigate(origin + "/")
        try browser.waitUntil("the sign-in form", script: "return !!document.querySelector('#signin #token-input')")
    }

    /// Pastes `token` into the sign-in form and waits until the room list has loaded.
    func signIn(token: String) throws {
        try open()
        try browser.sendKeys("#token-input", token)
        try browser.click("#signin-button")
        try waitReady()
    }

    /// Waits for `body[data-ready=true]`: signed in, room list loaded.
    func waitReady() throws {
        try browser.waitUntil(timeout: 30, "the client ready", script: "return document.body.dataset.ready === 'true'")
    }

    /// Clicks the room in `#room-list` and waits until it is the open one
    /// and its socket is connected (what a user sees before typing).
    func openRoom(_ id: String) throws {
        let entry = "#room-list [data-room-id=\"\(id)\"]"
        try browser.waitUntil("room \(id) in the list", script: "return !!document.querySelector(arguments[0])", [entry])
        try browser.click(entry)
        try browser.waitUntil(
            "room \(id) open",
            script: """
                const list = document.getElementById('message-list');
                return list && list.dataset.roomId === arguments[0] && document.querySelector(arguments[1]).getAttribute('aria-current') === 'true'
                    && document.getElementById('connection-state').dataset.state === 'connected'
                """, [id, entry])
    }

    /// Types `text` and Enter in the composer.
    func send(_ text: String) throws {
        try browser.sendKeys("#message-input", text + BrowserSession.enter)
    }

    /// Every `.message` of the open room, top to bottom.
    func messages() throws -> [Shown] {
        let rows = try browser.execute("""
            return [...document.querySelectorAll('#message-list .message')].map(m => ({
                id: m.dataset.messageId || '', clientID: m.dataset.clientMsgId || '', status: m.dataset.status || '',
                sender: m.querySelector('.sender')?.textContent ?? '', content: m.querySelector('.content')?.textContent ?? '',
                readBy: (m.querySelector('.read-by')?.textContent ?? '') + ' ' + (m.querySelector('.read-by')?.dataset.readBy ?? '')
            }))
            """) as? [[String: Any]] ?? []
        return rows.map {
            Shown(
                id: $0["id"] as? String ?? "", clientID: $0["clientID"] as? String ?? "", status: $0["status"] as? String ?? "",
                sender: $0["sender"] as? String ?? "", content: $0["content"] as? String ?? "", readBy: $0["readBy"] as? String ?? ""
            )
        }
    }

    /// One message as the page shows it.
    struct Shown: Equatable {
        var id, clientID, status, sender, content, readBy: String
    }

    /// The contents of the open room's messages, top to bottom.
    func contents() throws -> [String] { try messages().map(\.content) }

    /// Waits until a message with `content` is shown and, when `status` is
    /// given, has that status; returns it.
    @discardableResult
    func waitForMessage(_ content: String, status: String? = nil, timeout: Double = 10) throws -> Shown {
        try browser.waitUntil(
            timeout: timeout, "message \(content)\(status.map { " \($0)" } ?? "")",
            script: """
                return [...document.querySelectorAll('#message-list .message')].some(m =>
                    m.querySelector('.content')?.textContent === arguments[0] && (!arguments[1] || m.dataset.status === arguments[1]))
                """, [content, status ?? ""])
        return try #require(try messages().first { $0.content == content })
    }

    /// Records every `data-status` a `.message` of `#message-list` takes
    /// (`window.statusLog`: [client id, status] pairs, in order). A
    /// MutationObserver's callback runs before the next task, so a status
    /// set and replaced by a later event (the server's echo) is still seen.
    /// Called again, it empties the log (one observer per page).
    func recordStatuses() throws {
        try browser.execute("""
            window.statusLog = [];
            if (window.statusObserver) return;
            const note = m => window.statusLog.push([m.dataset.clientMsgId || '', m.dataset.status || '']);
            window.statusObserver = new MutationObserver(records => {
                for (const r of records) {
                    if (r.type === 'attributes') { if (r.target.matches('.message')) note(r.target); continue; }
                    for (const n of r.addedNodes) {
                        if (n.nodeType !== 1) continue;
                        if (n.matches('.message')) note(n);
                        n.querySelectorAll('.message').forEach(note);
                    }
                }
            }).observe(document.getElementById('message-list'), {childList: true, subtree: true, attributes: true, attributeFilter: ['data-status']});
            """)
    }

    /// The statuses recorded for `clientID` since `recordStatuses`, in order, repeats folded.
    func statuses(of clientID: String) throws -> [String] {
        let log = try browser.execute("return window.statusLog") as? [[String]] ?? []
        var result: [String] = []
        for entry in log where entry.first == clientID && result.last != entry.last { result.append(entry.last ?? "") }
        return result
    }

    /// Records every value `#connection-state`'s `data-state` had from now
    /// on (`window.stateLog`: each change's old value and the value after it).
    func recordConnectionStates() throws {
        try browser.execute("""
            const el = document.getElementById('connection-state');
            window.stateLog = [el.dataset.state];
            new MutationObserver(records => {
                for (const r of records) window.stateLog.push(r.oldValue);
                window.stateLog.push(el.dataset.state);
            }).observe(el, {attributes: true, attributeFilter: ['data-state'], attributeOldValue: true});
            """)
    }

    /// Records every non-empty text `#error-banner` shows from now on
    /// (`window.errorLog`; the banner clears itself after 10 s, so a
    /// look at the end would miss one shown meanwhile).
    func recordErrors() throws {
        try browser.execute("""
            const el = document.getElementById('error-banner');
            window.errorLog = el.textContent.trim() ? [el.textContent] : [];
            new MutationObserver(() => { if (el.textContent.trim()) window.errorLog.push(el.textContent); })
                .observe(el, {childList: true, characterData: true, subtree: true});
            """)
    }

    /// The texts `#error-banner` showed since `recordErrors`.
    func errors() throws -> [String] {
        try #require(try browser.execute("return window.errorLog") as? [String], "no window.errorLog: recordErrors first")
    }

    /// The values `data-state` had since `recordConnectionStates`.
    func connectionStates() throws -> [String] {
        try browser.execute("return window.stateLog") as? [String] ?? []
    }

    /// Scrolls `#message-list` to its end (an image that loads after the
    /// list was scrolled down grows it past the end).
    func scrollToBottom() throws {
        try browser.execute("const l = document.getElementById('message-list'); l.scrollTop = l.scrollHeight")
    }

    /// Writes a screenshot to docs/screenshots/`name`.png when CHATD_SCREENSHOTS=1,
    /// so that an ordinary test run leaves the checkout as it was.
    func screenshot(_ name: String) throws {
        guard ProcessInfo.processInfo.environment["CHATD_SCREENSHOTS"] == "1" else { return }
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/screenshots")
        try FileManager.default.createDirectory(at: docs, withIntermediateDirectories: true)
        // Let pending layout, fonts and image decodes settle into the frame.
        try browser.execute("return new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)))")
        try browser.screenshot().write(to: docs.appendingPathComponent(name + ".png"))
    }
}
