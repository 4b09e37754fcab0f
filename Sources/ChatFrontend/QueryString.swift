import Foundation

/// A request's query, read as `application/x-www-form-urlencoded` (WHATWG
/// URL), which is what browsers' `URLSearchParams`, Python's `urlencode` and
/// `curl --data-urlencode` send: `+` is a space, `%XX` a byte. The first of
/// repeated names wins, as Django's `QueryDict.get` does not, but DRF's
/// filters read one value and this keeps the choice stable.
enum QueryString {
    static func parse(_ query: Substring) -> [String: String] {
        var items: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = decode(kv[0])
            if items[key] == nil { items[key] = kv.count > 1 ? decode(kv[1]) : "" }
        }
        return items
    }

    /// `+` to space, then percent-decoding; a malformed escape or bytes that
    /// are not UTF-8 leave the text as it came (the WHATWG parser keeps a bad
    /// escape literally).
    static func decode(_ text: Substring) -> String {
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        guard spaced.contains("%") else { return spaced }
        return spaced.removingPercentEncoding ?? spaced
    }
}
