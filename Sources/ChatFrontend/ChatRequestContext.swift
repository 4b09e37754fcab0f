import ChatCore
import Hummingbird

/// Who made a request: the verified identity, and the JSON every command
/// carries as its user, encoded once per request.
struct Caller: Sendable {
    var identity: Identity
    var json: [UInt8]
}

/// The context of every REST request: Hummingbird's core storage and the
/// caller, which `AuthenticatorMiddleware` sets before any handler of an
/// authenticated route runs (nil on `/healthz`, the one open route).
struct ChatRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var caller: Caller?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    /// The caller of an authenticated route. A route registered without the
    /// authenticator has none: a programming error, answered 500.
    func requireCaller() throws -> Caller {
        guard let caller else { throw HTTPError(.internalServerError, message: "route registered without authentication") }
        return caller
    }
}
