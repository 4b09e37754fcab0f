import ChatWire
import Testing

@Suite struct WorkerNameTests {
    @Test func roundTrips() {
        for name in [WorkerName(.store, 0), WorkerName(.store, 12), WorkerName(.receipts, 1), WorkerName(.files, 0)] {
            #expect(WorkerName(name.description) == name)
        }
        #expect(WorkerName(.search, 0).description == "search.0")
    }

    @Test func refusesWhatIsNotAWorker() {
        for text in ["frontend.0", "store", "store.", ".0", "store.-1", "store.01", "store.1.2", "store.x", ""] {
            #expect(WorkerName(text) == nil, "\(text)")
        }
    }

    @Test func queues() {
        #expect(WorkerName(.store, 3).queue == "store-3")
        // Replicas of the other roles share their role's queue.
        #expect(WorkerName(.receipts, 1).queue == "receipts")
        #expect(WorkerName("receipts.0")?.queue == "receipts")
    }

    @Test func ordersByRoleThenIndex() {
        let names = [WorkerName(.files, 0), WorkerName(.store, 10), WorkerName(.store, 2), WorkerName(.receipts, 0)]
        #expect(names.sorted().map(\.description) == ["store.2", "store.10", "receipts.0", "files.0"])
    }
}
