import ChatCore
import ChatTesting
import Foundation
import Testing

extension EndToEnd {
    /// Issue 14: the web client in real headless Chromium, driven over
    /// WebDriver (ChatTesting/WebDriver.swift), against the real server.
    @Suite struct Browser {
        /// The harness itself, on a page of its own: what the client tests rely on.
        @Test func harnessDrivesAPage() throws {
            let driver = try WebDriver.start()
            defer { driver.stop() }
            let browser = try driver.browser()
            let page = """
                <input id="name"><input id="file" type="file"><button id="go" onclick="document.getElementById('out').textContent = 'hi ' + document.getElementById('name').value">go</button><p id="out"></p>
                """
            try browser.navigate("data:text/html;charset=utf-8," + (page.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))
            try browser.sendKeys("#name", "alice")
            try browser.click("#go")
            try browser.waitUntil(timeout: 5, "the button's text", script: "return document.getElementById('out').textContent === 'hi alice'")
            #expect(try browser.execute("return arguments[0] + 1", [41]) as? Int == 42)

            // A file input takes a path.
            let file = try TestServer.temporaryDirectory() + "/dot.png"
            defer { try? FileManager.default.removeItem(atPath: (file as NSString).deletingLastPathComponent) }
            try EndToEnd.Files.png.write(to: URL(fileURLWithPath: file))
            try browser.sendKeys("#file", file)
            #expect(try browser.execute("const f = document.getElementById('file').files[0]; return f.name + ' ' + f.size") as? String == "dot.png \(EndToEnd.Files.png.count)")

            // Failures carry WebDriver's message, and a wait that never holds says what it waited for.
            #expect(throws: WebDriverError.self) { _ = try browser.find("#missing") }
            do {
                _ = try browser.find("#missing")
            } catch {
                #expect("\(error)".contains("no such element"), "\(error)")
            }
            do {
                try browser.execute("console.error('from the page')")
                try browser.waitUntil(timeout: 0.3, "never", script: "return false")
                Issue.record("a false condition passed")
            } catch {
                #expect("\(error)".contains("waiting for never"), "\(error)")
                #expect("\(error)".contains("from the page"), "\(error)")
            }

            let png = try browser.screenshot()
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
            try browser.refresh()
            #expect(try browser.execute("return document.getElementById('out').textContent") as? String == "")
            #expect(throws: WebDriverError.self) { try WebDriver.binaries(environment: ["CHROMEDRIVER": "/nonexistent/chromedriver"]) }
            do {
                _ = try WebDriver.binaries(environment: ["CHROMEDRIVER": "/nonexistent/chromedriver"])
            } catch {
                #expect("\(error)".contains("chromium chromium-driver"), "\(error)")
            }
        }

        /// Alice creates a room in the client and both talk in it: messages
        /// go pending → sent and reach the other, each sees the other typing
        /// and reading, a store worker SIGKILLed mid-conversation changes
        /// nothing either sees, an image shows its preview, and a reload keeps the history.
        @Test func twoUsersConverse() async throws {
            let server = try await TestServer.start()
            defer { server.stop() }
            // Carol, a third member, only listens on a socket: what the clients send.
            let tokens = try await Steps.users(server, "alice", "bob", "carol")
            let driver = try WebDriver.start()
            defer { driver.stop() }
            let alice = ClientPage(browser: try driver.browser(), server: server)
            let bob = ClientPage(browser: try driver.browser(), server: server)

            try alice.open()
            try alice.screenshot("signin")
            try alice.signIn(token: tokens[0])
            let room = try Self.createRoomInTheClient(alice, name: "Launch plan", members: ["bob", "carol"].map(IDs.userID(forSubject:)))
            try alice.openRoom(room)
            try bob.signIn(token: tokens[1])
            try bob.openRoom(room)

            try Self.exchange(alice, bob)
            let carol = try server.webSocket("/ws/chat/\(room)/", token: tokens[2])
            try Self.typing(alice, bob, listener: carol)
            carol.close()
            try await Self.receipts(alice, bob, server: server, room: room, bobToken: tokens[1])
            try await Self.storeWorkerKilled(alice, bob, server: server, room: room, token: tokens[0])
            try Self.upload(alice, bob)

            // A reload keeps the session (the token in localStorage) and the
            // history, with the receipts of what was sent around the kill.
            try await Self.waitAllRead(server, room: room, token: tokens[1])
            let before = try alice.contents()
            try alice.browser.refresh()
            try alice.waitReady()
            try alice.openRoom(room)
            try alice.browser.waitUntil("the history after a reload", script: "return document.querySelectorAll('#message-list .message').length >= arguments[0]", [before.count])
            #expect(try alice.contents() == before)
            try alice.browser.waitUntil("Bob in alice 3's read-by", script: Self.readBy, ["alice 3", "Bob", IDs.userID(forSubject: "bob")])
            try alice.browser.waitUntil("the preview after a reload", script: Self.previewLoaded)
            try alice.scrollToBottom()
            try alice.screenshot("conversation")

            // A phone's width: the room (its own column) with the preview.
            let narrow = ClientPage(browser: try driver.browser(width: 390, height: 844), server: server)
            try narrow.signIn(token: tokens[1])
            try narrow.openRoom(room)
            #expect(try narrow.browser.execute("return document.documentElement.clientWidth") as? Int == 390)
            try narrow.browser.waitUntil("the preview on a phone", script: Self.previewLoaded)
            try narrow.scrollToBottom()
            try narrow.screenshot("narrow")
            for (name, page) in [("alice", alice), ("bob", bob), ("bob on a phone", narrow)] { try Self.expectQuietConsole(page, name) }
        }

        /// Issue 17's demo: Alice and Bob, each in a browser of their own,
        /// exchange messages in an encrypted room (keys made and kept by Web
        /// Crypto in each browser; the server stores and serves ciphertext
        /// only) and then hold a video call over WebRTC, the fake camera of
        /// each reaching the other.
        @Test func anEncryptedRoomAndAVideoCall() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let (aliceID, bobID) = (IDs.userID(forSubject: "alice"), IDs.userID(forSubject: "bob"))
            let driver = try WebDriver.start()
            defer { driver.stop() }
            // A fake camera and microphone, granted without asking; ICE over loopback.
            let media = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
                         "--autoplay-policy=no-user-gesture-required"]
            let alice = ClientPage(browser: try driver.browser(arguments: media), server: server)
            let bob = ClientPage(browser: try driver.browser(arguments: media), server: server)

            // This Chromium's Web Crypto has what e2e.js uses.
            try alice.open()
            let algorithms = try alice.browser.execute("""
                return Promise.all([['X25519', ['deriveBits']], ['Ed25519', ['sign', 'verify']]].map(([name, usages]) =>
                    crypto.subtle.generateKey({name}, false, usages).then(() => name, e => name + ': ' + e.message)))
                """) as? [String]
            #expect(algorithms == ["X25519", "Ed25519"])

            // Signing in publishes each browser's device (Bob's after the
            // room is made: a room list is read at sign-in, then every 30 s).
            try alice.signIn(token: tokens[0])
            let room = try Self.createRoomInTheClient(alice, name: "Secret plans", members: [bobID], encrypted: true)
            let created = try await server.request("GET", "/api/chat/rooms/\(room)/", token: tokens[0])
            #expect(created.object["encrypted"] as? Bool == true, "\(created.text)")
            try bob.signIn(token: tokens[1])
            var devices: [String] = []
            for page in [alice, bob] {
                devices.append(try #require(try page.browser.execute("return document.body.dataset.deviceId") as? String, "no device published"))
            }
            try alice.openRoom(room)
            try bob.openRoom(room)
            #expect(try alice.browser.execute("return document.getElementById('open-room-lock').hidden") as? Bool == false)

            // Each reads the other's text; the server holds none of it.
            let secret = "the key is under the mat \(UUID().uuidString.prefix(8))"
            try alice.send(secret)
            try alice.waitForMessage(secret, status: "sent")
            try bob.waitForMessage(secret)
            let reply = "noted, see you at nine \(UUID().uuidString.prefix(8))"
            try bob.send(reply)
            try alice.waitForMessage(reply)
            for (token, device) in [(tokens[0], devices[0]), (tokens[1], devices[1])] {
                let page = try await server.request("GET", "/api/chat/rooms/\(room)/messages/", token: token, headers: ["X-Device-Id": device])
                let results = page.object["results"] as? [[String: Any]] ?? []
                #expect(results.count == 2 && results.allSatisfy { $0["content"] as? String == "" && $0["message_type"] as? String == "encrypted" }, "\(page.text)")
                #expect(results.allSatisfy { ($0["ciphertext"] as? String)?.isEmpty == false }, "each for this device: \(page.text)")
                #expect(!page.text.contains(secret) && !page.text.contains(reply))
            }
            // Edited in the client: sealed anew, read anew.
            let edited = "the key is in the drawer \(UUID().uuidString.prefix(8))"
            let sentID = try #require(try alice.messages().first { $0.content == secret }?.id)
            try alice.browser.click("[data-message-id=\"\(sentID)\"] button.edit")
            try alice.browser.execute("document.getElementById('message-input').value = ''")
            try alice.send(edited)
            try bob.waitForMessage(edited)

            // A video call: Alice rings, Bob joins, each sees the other's camera.
            try alice.browser.click("#call-video-button")
            try bob.browser.waitUntil("the incoming call", script: """
                const panel = document.getElementById('call-panel');
                return !panel.hidden && panel.dataset.state === 'ringing' && !document.getElementById('call-join').hidden
                """)
            try bob.browser.click("#call-join")
            for (page, other) in [(alice, bobID), (bob, aliceID)] {
                try page.browser.waitUntil(timeout: 30, "a connected call with the other's video", script: """
                    const peer = document.querySelector(`.remote-peer[data-user-id="${arguments[0]}"][data-connection=connected]`);
                    const video = peer?.querySelector('video');
                    return !!video && video.videoWidth > 0 && !video.paused && video.currentTime > 0
                    """, [other])
                #expect(try page.browser.execute("return document.getElementById('local-video').videoWidth") as? Int ?? 0 > 0)
            }
            try alice.screenshot("call")
            let active = try await server.request("GET", "/api/chat/rooms/\(room)/calls/", token: tokens[1])
            let call = try #require((active.object["results"] as? [[String: Any]])?.first, "\(active.text)")
            #expect(call["state"] as? String == "active" && call["media"] as? String == "video", "\(active.text)")

            // Bob leaves: Alice's side drops his connection; her leaving ends the call.
            try bob.browser.click("#call-leave")
            try alice.browser.waitUntil("Bob's connection closed", script: "return !document.querySelector('.remote-peer')")
            try alice.browser.click("#call-leave")
            for page in [alice, bob] {
                try page.browser.waitUntil("the call ended", script: """
                    const panel = document.getElementById('call-panel');
                    return panel.dataset.state === 'ended' && panel.dataset.joined === 'false' && document.getElementById('local-video').srcObject === null
                    """)
            }
            let history = try await server.request("GET", "/api/chat/rooms/\(room)/calls/", token: tokens[0])
            #expect((history.object["results"] as? [[String: Any]])?.first?["state"] as? String == "ended", "\(history.text)")
            for (name, page) in [("alice", alice), ("bob", bob)] { try Self.expectQuietConsole(page, name) }

            // Signing out takes the device out of the key directory.
            try bob.browser.click("#signout-button")
            try await server.waitUntil(timeout: 10, "Bob's device gone") {
                let keys = try await server.request("GET", "/api/chat/keys/users/\(bobID)/", token: tokens[0])
                return keys.status == 200 && (keys.object["devices"] as? [[String: Any]])?.isEmpty == true
            }
        }

        /// Nothing went wrong in the page that only its console would tell:
        /// no script error, no request refused by the Content-Security-Policy,
        /// no failed request (Chromium logs each as SEVERE).
        static func expectQuietConsole(_ page: ClientPage, _ name: String) throws {
            let log = try page.browser.consoleLog()
            #expect(!log.contains("SEVERE"), "\(name)'s console:\n\(log)")
        }

        /// Fills the new-room dialog and waits for the room in the list: its id.
        static func createRoomInTheClient(_ page: ClientPage, name: String, members: [String], encrypted: Bool = false) throws -> String {
            try page.browser.click("#new-room-button")
            try page.browser.waitUntil("the new-room dialog", script: "const e = document.getElementById('new-room-name'); return e && e.offsetParent !== null")
            try page.browser.sendKeys("#new-room-name", name)
            try page.browser.execute("const s = document.getElementById('new-room-type'); s.value = 'group'; s.dispatchEvent(new Event('change', {bubbles: true}))")
            try page.browser.sendKeys("#new-room-members", members.joined(separator: ","))
            if encrypted { try page.browser.click("#new-room-encrypted") }
            try page.browser.click("#new-room-submit")
            let id = try page.browser.waitUntil(
                "the new room in the list",
                script: """
                    const room = [...document.querySelectorAll('#room-list [data-room-id]')].find(r => r.querySelector('.room-name')?.textContent === arguments[0]);
                    return room ? room.dataset.roomId : null
                    """, [name])
            return try #require(id as? String)
        }

        /// Each sends; each sees the other's message; one's own goes pending → sent.
        static func exchange(_ alice: ClientPage, _ bob: ClientPage) throws {
            try alice.recordStatuses()
            try alice.send("Hello Bob")
            let sent = try alice.waitForMessage("Hello Bob", status: "sent")
            #expect(!sent.clientID.isEmpty && !sent.id.isEmpty, "\(sent)")
            #expect(try alice.statuses(of: sent.clientID) == ["pending", "sent"])
            let received = try bob.waitForMessage("Hello Bob")
            #expect(received.sender.contains("Alice") && received.id == sent.id, "\(received)")

            try bob.recordStatuses()
            try bob.send("Hi Alice")
            let reply = try bob.waitForMessage("Hi Alice", status: "sent")
            #expect(try bob.statuses(of: reply.clientID) == ["pending", "sent"])
            #expect(try alice.waitForMessage("Hi Alice").sender.contains("Bob"))
            #expect(try alice.contents() == ["Hello Bob", "Hi Alice"])
            #expect(try bob.contents() == ["Hello Bob", "Hi Alice"])
        }

        /// Alice types: Bob's indicator names her; she sends: her client
        /// says she stopped and the indicator clears. Then the same the other way.
        static func typing(_ alice: ClientPage, _ bob: ClientPage, listener: WebSocketClient) throws {
            let empty = "return document.getElementById('typing-indicator').textContent.trim() === ''"
            for (typist, other, name, day) in [(alice, bob, "Alice", "Friday"), (bob, alice, "Bob", "Saturday")] {
                let id = IDs.userID(forSubject: name.lowercased())
                try other.browser.waitUntil("no one typing", script: empty)
                try typist.browser.sendKeys("#message-input", "Are we still on for")
                try other.browser.waitUntil("\(name) typing", script: "return document.getElementById('typing-indicator').textContent.includes(arguments[0])", [name])
                #expect(try typingEvent(listener, from: id, isTyping: true), "\(name)'s typing true")
                try typist.send(" \(day)?")
                try other.waitForMessage("Are we still on for \(day)?")
                // The indicator would also clear by itself (TYPING_SHOW_MS, 8 s
                // after the last `true`): what shows the client said so is the false.
                #expect(try typingEvent(listener, from: id, isTyping: false), "\(name)'s typing false")
                try other.browser.waitUntil(timeout: 5, "\(name)'s indicator cleared", script: empty)
            }
        }

        /// Whether `socket` gets a typing event of `user` with `isTyping` within 10 s (others skipped).
        static func typingEvent(_ socket: WebSocketClient, from user: String, isTyping: Bool) throws -> Bool {
            let deadline = Date().addingTimeInterval(10)
            while deadline.timeIntervalSinceNow > 0 {
                guard let event = try socket.receive(type: "typing", timeout: deadline.timeIntervalSinceNow) else { return false }
                if event["user_id"] as? String == user && event["is_typing"] as? Bool == isTyping { return true }
            }
            return false
        }

        /// Whether the message whose content is `arguments[0]` lists a reader
        /// named `arguments[1]` or with the id `arguments[2]`.
        static let readBy = """
            const m = [...document.querySelectorAll('#message-list .message')].find(m => m.querySelector('.content')?.textContent === arguments[0]);
            const r = m?.querySelector('.read-by');
            return !!r && (r.textContent.includes(arguments[1]) || (r.dataset.readBy || '').split(',').includes(arguments[2]))
            """

        /// Whether every image preview shown has loaded the 240×140 mockup.
        static let previewLoaded = """
            const imgs = [...document.querySelectorAll('#message-list .message .attachment img.preview')];
            return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth === 240 && i.naturalHeight === 140)
            """

        /// Waits until the token's user has no unread message in `room` (the server has their receipts).
        static func waitAllRead(_ server: TestServer, room: String, token: String) async throws {
            try await server.waitUntil(timeout: 10, "every message read") {
                try await server.request("GET", "/api/chat/rooms/\(room)/", token: token).object["unread_count"] as? Int == 0
            }
        }

        /// Each has the other's messages on screen: the server has them read,
        /// and each sender's `.read-by` names the reader.
        static func receipts(_ alice: ClientPage, _ bob: ClientPage, server: TestServer, room: String, bobToken: String) async throws {
            try await waitAllRead(server, room: room, token: bobToken)
            // The server broadcasts no receipts: the client re-reads the newest
            // page's read_by every 5 s for a minute after one's own message (REFRESH_FAST_MS).
            try alice.browser.waitUntil(timeout: 20, "Bob in Hello Bob's read-by", script: Self.readBy, ["Hello Bob", "Bob", IDs.userID(forSubject: "bob")])
            try bob.browser.waitUntil(timeout: 20, "Alice in Hi Alice's read-by", script: Self.readBy, ["Hi Alice", "Alice", IDs.userID(forSubject: "alice")])
            // One's own reading is not a receipt: Alice is not among Hello Bob's readers.
            #expect(try !(alice.browser.execute(Self.readBy, ["Hello Bob", "Alice", IDs.userID(forSubject: "alice")]) as? Bool ?? true))
        }

        /// Both keep sending while the store worker is SIGKILLed: every
        /// message shows once, confirmed, in the server's order in both
        /// browsers, and neither connection state ever leaves `connected`,
        /// no error is shown, and each of one's own goes pending → sent only.
        static func storeWorkerKilled(_ alice: ClientPage, _ bob: ClientPage, server: TestServer, room: String, token: String) async throws {
            for page in [alice, bob] {
                try page.recordConnectionStates()
                #expect(try page.connectionStates() == ["connected"])
                try page.recordErrors()
                try page.recordStatuses()
            }
            let earlier = try alice.contents()
            let worker = try #require(server.childPIDs(matching: "worker --role store").first)
            var sent: [String] = []
            for round in 0..<4 {
                if round == 1 { #expect(kill(worker, SIGKILL) == 0) }
                for (name, page) in [("alice", alice), ("bob", bob)] {
                    sent.append("\(name) \(round)")
                    try page.send("\(name) \(round)")
                }
            }
            try await server.waitUntil(timeout: 20, "a new store worker") {
                let pids = server.childPIDs(matching: "worker --role store")
                return !pids.isEmpty && !pids.contains(worker)
            }
            for page in [alice, bob] {
                for text in sent { try page.waitForMessage(text, timeout: 20) }
            }
            let stored = try await Steps.contents(server, token: token, room: room)
            #expect(Set(stored.dropFirst(earlier.count)) == Set(sent) && stored.count == earlier.count + sent.count, "\(stored)")
            for (name, page) in [("alice", alice), ("bob", bob)] {
                let shown = try page.messages()
                #expect(shown.map(\.content) == stored, "\(name) shows \(shown.map(\.content))")
                #expect(Set(shown.map(\.id)).count == shown.count, "\(name): a message id twice")
                #expect(shown.allSatisfy { $0.status == "sent" || $0.status.isEmpty }, "\(name): \(shown.map(\.status))")
                // Each author's messages in the order they were typed.
                let own = shown.map(\.content).filter { $0.hasPrefix(name + " ") }
                #expect(own == sent.filter { $0.hasPrefix(name + " ") }, "\(name): \(own)")
                let states = try page.connectionStates()
                #expect(states.allSatisfy { $0 == "connected" }, "\(name): \(states)")
                #expect(try page.errors() == [], "\(name)'s error banner")
                for message in shown where message.content.hasPrefix(name + " ") {
                    #expect(!message.clientID.isEmpty, "\(name): \(message)")
                    #expect(try page.statuses(of: message.clientID) == ["pending", "sent"], "\(name): \(message.content)")
                }
            }
        }

        /// Alice sends an image (made by the page's canvas): both browsers show its preview, decoded.
        static func upload(_ alice: ClientPage, _ bob: ClientPage) throws {
            let base64 = try #require(try alice.browser.execute("""
                const c = document.createElement('canvas');
                c.width = 240; c.height = 140;
                const g = c.getContext('2d'), fill = g.createLinearGradient(0, 0, 240, 140);
                fill.addColorStop(0, '#2563eb'); fill.addColorStop(1, '#16a34a');
                g.fillStyle = fill; g.fillRect(0, 0, 240, 140);
                g.fillStyle = '#fff'; g.font = 'bold 30px sans-serif'; g.fillText('launch v2', 44, 80);
                return c.toDataURL('image/png').split(',')[1];
                """) as? String)
            let dir = try TestServer.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let file = dir + "/mockup.png"
            try #require(Data(base64Encoded: base64)).write(to: URL(fileURLWithPath: file))

            try alice.browser.sendKeys("#file-input", file)
            try alice.browser.sendKeys("#message-input", "The new mockup")
            try alice.browser.click("#send-button")
            for page in [alice, bob] {
                try page.browser.waitUntil(timeout: 15, "the image preview", script: previewLoaded)
            }
            try alice.scrollToBottom()
            try alice.screenshot("upload-preview")
        }

        /// Alice opens a room with unread messages while Bob keeps talking in
        /// it: her badge for the open room clears once her receipts are
        /// accepted, though the busy room keeps putting off the room list's re-read.
        @Test func openRoomsBadgeClearsWhileTheRoomIsBusy() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"], name: "Busy")
            for index in 0..<5 {
                #expect(try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[1], json: ["content": "before \(index)"]).status == 201)
            }
            let driver = try WebDriver.start()
            defer { driver.stop() }
            let alice = ClientPage(browser: try driver.browser(), server: server)
            try alice.signIn(token: tokens[0])
            let badge = "#room-list [data-room-id=\"\(room)\"] .unread-count"
            try alice.browser.waitUntil("the unread badge", script: "return document.querySelector(arguments[0])?.textContent === '5'", [badge])

            // Bob talks every 0.4 s (bounded: 30 messages), more often than the client's 1 s room-list debounce.
            let bob = Task {
                for index in 0..<30 where !Task.isCancelled {
                    _ = try? await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[1], json: ["content": "busy \(index)"])
                    try? await Task.sleep(for: .milliseconds(400))
                }
            }
            defer { bob.cancel() }
            try alice.openRoom(room)
            try alice.browser.waitUntil(
                timeout: 5, "the open room's badge cleared",
                script: "const b = document.querySelector(arguments[0]); return !!b && b.hidden && b.textContent === ''", [badge])
            bob.cancel()
            await bob.value
            try Self.expectQuietConsole(alice, "alice")
        }

        /// 120 messages in a room: opening it shows the newest page, and
        /// scrolling to the top loads older pages until the first, in
        /// order and each once. Then a search finds one of them.
        @Test func scrollingUpLoadsOlderHistory() async throws {
            let server = try await TestServer.start(environment: Steps.noRateLimits)
            defer { server.stop() }
            let tokens = try await Steps.users(server, "alice", "bob")
            let room = try await Steps.room(server, token: tokens[0], members: ["bob"], name: "Release notes")
            let all = (0..<120).map { String(format: "note %03d", $0) }
            for (index, text) in all.enumerated() {
                let posted = try await server.request("POST", "/api/chat/rooms/\(room)/messages/", token: tokens[index % 2], json: ["content": text])
                #expect(posted.status == 201, "\(posted.text)")
            }
            let driver = try WebDriver.start()
            defer { driver.stop() }
            let alice = ClientPage(browser: try driver.browser(), server: server)
            try alice.signIn(token: tokens[0])
            try alice.openRoom(room)
            try alice.waitForMessage("note 119")
            var shown = try alice.messages()
            #expect(shown.count < all.count, "the first page has \(shown.count)")
            #expect(shown.map(\.content) == Array(all.suffix(shown.count)))

            // Scroll to the top until nothing older is left (bounded: 120 messages are a few pages).
            var scrolls = 0
            while shown.count < all.count && scrolls < 10 {
                scrolls += 1
                let count = shown.count
                try alice.browser.execute("const l = document.getElementById('message-list'); l.scrollTop = 0; l.dispatchEvent(new Event('scroll'))")
                try alice.browser.waitUntil(
                    "more than \(count) messages", script: "return document.querySelectorAll('#message-list .message').length > arguments[0]", [count])
                shown = try alice.messages()
                // Chronological and each once after every page.
                #expect(shown.map(\.content) == Array(all.suffix(shown.count)), "after scroll \(scrolls)")
                #expect(Set(shown.map(\.id)).count == shown.count, "a message id twice after scroll \(scrolls)")
            }
            #expect(shown.map(\.content) == all)
            #expect(scrolls >= 2, "120 messages in \(scrolls) pages")
            try alice.browser.waitUntil("the list's data-has-older", script: "return document.getElementById('message-list').dataset.hasOlder === 'false'")
            // The history's head is the list's first item, above the first message (not laid over the messages).
            #expect(try alice.browser.execute(
                """
                const head = document.getElementById('load-older-state'), first = document.querySelector('#message-list .message');
                return head.parentElement.id === 'message-list' && head.nextElementSibling === first
                    && head.textContent === 'Start of the conversation' && head.getBoundingClientRect().bottom <= first.getBoundingClientRect().top
                """) as? Bool == true)

            // Read through (the server has all her receipts): the open room's
            // badge follows within a bounded wait, not at the next 30 s rooms poll.
            try await Self.waitAllRead(server, room: room, token: tokens[0])
            try alice.browser.waitUntil(
                timeout: 3, "the open room's badge cleared",
                script: "const b = document.querySelector(arguments[0]); return !!b && b.hidden && b.textContent === ''",
                ["#room-list [data-room-id=\"\(room)\"] .unread-count"])

            // The search index follows the store: wait until it has them all.
            try await server.waitUntil(timeout: 10, "the search index") {
                (try await server.request("GET", "/api/chat/search/messages/?q=note%2004", token: tokens[0]).json as? [Any])?.count == 10
            }
            try alice.browser.sendKeys("#search-input", "note 04" + BrowserSession.enter)
            let found = try alice.browser.waitUntil(
                "search results", script: "const r = document.querySelectorAll('#search-results [data-message-id]'); return r.length || null")
            #expect(found as? Int == 10)
            #expect(try alice.browser.execute("return document.getElementById('search-results').textContent.includes('note 042')") as? Bool == true)
            try alice.screenshot("search")
            try Self.expectQuietConsole(alice, "alice")
        }
    }
}
