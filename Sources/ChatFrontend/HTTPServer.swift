import ChatBus
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Where the frontend takes its connections from.
public enum ListenSource: Sendable, Equatable {
    /// A port this process binds.
    case address(host: String, port: Int)
    /// A listening socket this process inherited: systemd's socket
    /// activation, handed down by the supervisor.
    case inherited(fd: CInt)
}

/// Serves `ChatChannel` connections: the accept loop of Hummingbird's
/// `Server`, which can only bind a port of its own, so that the frontend can
/// also serve a socket systemd passed (`chatd.socket`). On graceful shutdown
/// it stops accepting and tells every connection to quiesce: WebSockets
/// close with 1001, keep-alive HTTP connections after their response.
struct HTTPServer: Service {
    let source: ListenSource
    let channel: ChatChannel
    let group: any EventLoopGroup
    let logger: Logger
    let onRunning: @Sendable (any Channel) -> Void

    func run() async throws {
        let quiescing = ServerQuiescingHelper(group: group)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .serverChannelInitializer { server in
                server.eventLoop.makeCompletedFuture {
                    try server.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: server))
                }
            }
        let (channel, logger) = (self.channel, self.logger)
        let setup: @Sendable (any Channel) -> EventLoopFuture<ChatChannel.Value> = { channel.setup(channel: $0, logger: logger) }
        let server: NIOAsyncChannel<ChatChannel.Value, Never> = switch source {
        case .address(let host, let port):
            try await bootstrap.bind(host: host, port: port, serverBackPressureStrategy: nil, childChannelInitializer: setup)
        case .inherited(let fd):
            try await bootstrap.bind(fd, cleanupExistingSocketFile: false, serverBackPressureStrategy: nil, childChannelInitializer: setup)
        }
        // NIO calls listen(fd, 128) on a socket it is given, before any option
        // applies, and the queue length belongs to the socket systemd shares
        // with every later frontend: set it back to chatd.socket's Backlog=.
        if case .inherited(let fd) = source { _ = listen(fd, 4096) }
        let stopped = server.channel.eventLoop.makePromise(of: Void.self)
        let executors = LoopTaskExecutor.forEachLoop(of: group)
        await withGracefulShutdownHandler {
            onRunning(server.channel)
            await withDiscardingTaskGroup { connections in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            let executor = executors[ObjectIdentifier(connection.channel.eventLoop)]
                            connections.addTask(executorPreference: executor) { await channel.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("accept loop ended", metadata: ["error": "\(error)"])
                }
            }
        } onGracefulShutdown: {
            quiescing.initiateShutdown(promise: stopped)
        }
        // Every connection has been told to close; give the WebSockets' close
        // frames a moment to leave before the process moves on to its drain.
        let bound = server.channel.eventLoop.scheduleTask(in: .seconds(2)) { stopped.succeed() }
        try? await stopped.futureResult.get()
        bound.cancel()
    }
}

/// Runs a connection's task on its channel's event loop. Without it the
/// request's task ran on Swift's concurrency pool: every request crossed
/// threads from the loop to the pool and back (reading the head, writing
/// the response), and the bus reply resumed it on the pool, waking a pool
/// thread each time (§11g). Route handlers do not block: file I/O runs on
/// NIOFileSystem's threads.
final class LoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    static func forEachLoop(of group: any EventLoopGroup) -> [ObjectIdentifier: LoopTaskExecutor] {
        var executors: [ObjectIdentifier: LoopTaskExecutor] = [:]
        for loop in group.makeIterator() { executors[ObjectIdentifier(loop)] = LoopTaskExecutor(loop) }
        return executors
    }
}

/// Hummingbird's `Application` glue, for our own server: a request context
/// per request, a 500 for errors no route turned into a response, and the
/// `Date` header every response carries (RFC 9110 6.6.1).
func makeResponder<R: HTTPResponder>(
    _ responder: R, logger: Logger, access: AccessLog? = nil
) -> HTTPChannelHandler.Responder where R.Context == ChatRequestContext {
    let dates = DateHeader.shared
    return { request, writer, channel in
        let started = access == nil ? 0 : monotonicNanos()
        let context = ChatRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: logger))
        var response: Response
        do {
            response = try await responder.respond(to: request, context: context)
        } catch {
            logger.debug("unhandled error", metadata: ["error": "\(error)"])
            response = Response(status: .internalServerError)
        }
        response.headers[.date] = dates.current
        // Browsers must not guess a type other than the one sent (downloads above all).
        response.headers[.xContentTypeOptions] = "nosniff"
        guard let access else { return try await writer.write(response: response.head, body: response.body) }
        let (body, sent) = AccessLog.counting(response.body)
        // Logged when the response is out, or the client went away meanwhile.
        defer {
            access.record(
                method: request.method.rawValue, target: request.uri.description, status: response.status.code, bytes: sent(), started: started,
                remote: channel.remoteAddress, requestID: request.headers[AccessLog.requestIDField]
            )
        }
        try await writer.write(response: response.head, body: body)
    }
}

/// The IMF-fixdate of the current second, formatted once per second.
final class DateHeader: Sendable {
    static let shared = DateHeader()
    private let cache = Mutex<(second: time_t, text: String)>((0, ""))

    var current: String {
        let now = time(nil)
        return cache.withLock { cache in
            if cache.second != now {
                var parts = tm()
                var t = now
                gmtime_r(&t, &parts)
                var buffer = [CChar](repeating: 0, count: 40)
                // strftime's %a and %b follow the C locale, which a process starts in.
                let count = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
                cache = (now, String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            return cache.text
        }
    }
}
