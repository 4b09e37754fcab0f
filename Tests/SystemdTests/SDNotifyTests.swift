import Foundation
import Systemd
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SDNotifyTests {
    @Test func encodesAssignmentsOnePerLineInOrder() {
        #expect(String(decoding: SDNotify.encode(["READY": "1", "STATUS": "2/2 children ready"]), as: UTF8.self) == "READY=1\nSTATUS=2/2 children ready")
    }

    @Test func decodesWhatItEncodes() {
        let fields = SDNotify.decode(SDNotify.encode(["WATCHDOG": "1", "CHATD_CHILD": "store.0", "CHATD_QUEUES": "store-0:3 receipts:0"]))
        #expect(fields == ["WATCHDOG": "1", "CHATD_CHILD": "store.0", "CHATD_QUEUES": "store-0:3 receipts:0"])
    }

    @Test func skipsMalformedLinesAndKeepsEqualsInValues() {
        let fields = SDNotify.decode(Array("READY=1\nnonsense\n\nSTATUS=a=b\n=empty key".utf8))
        #expect(fields == ["READY": "1", "STATUS": "a=b", "": "empty key"])
    }

    @Test func addressOfAPathIsNulTerminated() throws {
        let (address, length) = try #require(SDNotify.address("/run/chatd/notify.sock"))
        #expect(address.sun_family == sa_family_t(AF_UNIX))
        #expect(Int(length) == MemoryLayout<sa_family_t>.size + "/run/chatd/notify.sock".utf8.count + 1)
    }

    @Test func anAtIsTheAbstractNamespace() throws {
        let (address, length) = try #require(SDNotify.address("@chatd"))
        let first = withUnsafeBytes(of: address.sun_path) { $0[0] }
        #expect(first == 0)
        #expect(Int(length) == MemoryLayout<sa_family_t>.size + 6)
    }

    @Test func refusesEmptyAndTooLongPaths() {
        #expect(SDNotify.address("") == nil)
        #expect(SDNotify.address("/" + String(repeating: "x", count: 200)) == nil)
    }

    @Test func aNotifierWithoutASocketSendsNothing() {
        let notifier = Notifier(socketPath: nil)
        #expect(!notifier.isEnabled)
        #expect(!notifier.send(["READY": "1"]))
    }

    @Test func theListenerGetsEachDatagramWithItsSendersPid() async throws {
        let path = "/tmp/chatd-notify-test-\(getpid()).sock"
        let queue = DispatchQueue(label: "notify-test")
        let (heard, heardMore) = AsyncStream.makeStream(of: ([String: String], Int32?).self)
        let listener = try NotifyListener(path: path, queue: queue) { fields, pid in heardMore.yield((fields, pid)) }
        #expect(Notifier(socketPath: listener.path).send(["WATCHDOG": "1", "CHATD_CHILD": "frontend.1"]))
        var datagrams = heard.makeAsyncIterator()
        let (fields, pid) = try #require(await datagrams.next())
        #expect(fields == ["WATCHDOG": "1", "CHATD_CHILD": "frontend.1"])
        #expect(pid == getpid())
    }
}

@Suite struct SocketActivationTests {
    @Test func nothingPassedOrPassedToAnotherProcess() {
        #expect(SocketActivation.descriptor(listenFDs: nil, listenPID: nil, names: nil, pid: 42) == nil)
        #expect(SocketActivation.descriptor(listenFDs: "0", listenPID: "42", names: nil, pid: 42) == nil)
        #expect(SocketActivation.descriptor(listenFDs: "1", listenPID: "41", names: nil, pid: 42) == nil)
    }

    @Test func theFirstOrTheOneNamedHTTP() {
        #expect(SocketActivation.descriptor(listenFDs: "1", listenPID: "42", names: nil, pid: 42) == 3)
        #expect(SocketActivation.descriptor(listenFDs: "3", listenPID: "42", names: "metrics::http", pid: 42) == 5)
        // A name beyond the count systemd passed does not count.
        #expect(SocketActivation.descriptor(listenFDs: "1", listenPID: "42", names: "metrics:http", pid: 42) == 3)
    }
}
