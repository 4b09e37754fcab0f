import ChatWire
import Testing

@Suite struct QueueReportTests {
    @Test func encodesPairsInQueueOrder() {
        #expect(QueueReport(["store-1": 2, "receipts": 0, "store-0": 3]).encoded == "receipts:0 store-0:3 store-1:2")
        #expect(QueueReport().encoded == "")
    }

    @Test func decodesWhatItEncodes() {
        let report = QueueReport(["store-0": 3, "files": 1, "search": 0])
        #expect(QueueReport(decoding: report.encoded) == report)
        #expect(QueueReport(decoding: "") == QueueReport())
        #expect(report.total == 4)
    }

    @Test func skipsMalformedPairsOnly() {
        let report = QueueReport(decoding: "store-0:3 nonsense store-1:-1 :4 files:x receipts:2:1 search:5")
        #expect(report == QueueReport(["store-0": 3, "search": 5]))
    }

    /// The supervisor sums reports for `ctl status`: huge counts are capped
    /// so that summing them cannot overflow.
    @Test func hugeCountsAreCappedSoTotalsCannotOverflow() {
        let report = QueueReport(decoding: "store-0:\(Int.max) store-1:\(Int.max) receipts:1")
        #expect(report.total == 2 * QueueReport.maxCount + 1)
    }
}
