// swift-tools-version: 6.2
import PackageDescription

// The target graph enforces the architecture (docs/architecture.md):
// only ChatStore/ChatWorkers touch SQLite, the frontend cannot; the supervisor
// has no domain code; the inter-process protocol lives only in ChatWire.
let package = Package(
    name: "chatd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chatd", targets: ["chatd"]),
        .executable(name: "chatd-load", targets: ["chatd-load"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: [.defaults, "YAML"]),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.7.1"),
        // Exact: Sources/ChatFrontend/Routes/MultipartHeaderGuard.swift mirrors
        // this version's parser byte for byte to keep its trap unreachable.
        .package(url: "https://github.com/vapor/multipart-kit", exact: "4.7.1"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        // Issue 14's /metrics: the metric points (swift-metrics) and their registry and text format (swift-prometheus).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Issue 15's PostgreSQL engine, linked only by ChatPostgres (never by the frontend or supervisor targets).
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // Issue 16's outgoing webhooks: the webhooks worker's HTTP client (timeouts, redirects, TLS).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZeroMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]
        ),
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ"]),
        .target(name: "ChatWire"),
        // sd_notify and socket activation: systemd's protocols, which the
        // supervisor speaks to systemd and its children speak to it.
        .target(name: "Systemd"),
        .target(name: "ChatCore", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(
            name: "ChatConfig",
            dependencies: [
                "ChatWire", .product(name: "Configuration", package: "swift-configuration"),
                // Logger.Level's names: what logLevel accepts.
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Each process's registry, its report to the supervisor, and the
        // merging of every process's text into one /metrics (docs/metrics.md).
        .target(
            name: "ChatMetrics",
            dependencies: [
                "ChatWire", "Systemd",
                .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "ChatBus",
            dependencies: [
                "ZeroMQ", "ChatWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "ChatStore",
            dependencies: ["ChatCore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The PostgreSQL engine behind ChatStore's StoreEngine: only the workers' processes open it.
        .target(
            name: "ChatPostgres",
            dependencies: [
                "ChatStore", "ChatCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "ChatWorkers",
            dependencies: [
                "ChatBus", "ChatStore", "ChatCore", "ChatConfig",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "ChatFrontend",
            dependencies: [
                "ChatBus", "ChatCore", "ChatConfig", "Systemd", "ChatMetrics",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // SIGUSR1: a restart, WebSockets closed with 1012.
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "MultipartKit", package: "multipart-kit"),
                // Non-blocking file I/O for uploads and downloads.
                .product(name: "_NIOFileSystem", package: "swift-nio"),
            ]
        ),
        .target(
            name: "ChatSupervisor",
            dependencies: [
                "ChatConfig", "ChatBus", "ChatCore", "ChatWire", "Systemd", "ChatMetrics",
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .executableTarget(
            name: "chatd",
            dependencies: [
                "ChatSupervisor", "ChatFrontend", "ChatWorkers", "ChatStore", "ChatPostgres", "ChatBus", "ChatWire", "ChatConfig", "Systemd", "ChatMetrics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "ChatTesting",
            dependencies: [
                "ChatFrontend",
                // Reads /metrics (`Exposition`).
                "ChatMetrics",
                // Tests play identity provider: RS256/ES256 keys and hand-built tokens.
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "chatd-load",
            dependencies: ["ChatTesting", "ChatCore", "ChatFrontend", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ"]),
        .testTarget(name: "ChatWireTests", dependencies: ["ChatWire", "ChatCore"]),
        .testTarget(name: "ChatBusTests", dependencies: ["ChatBus", "ChatWire", "ZeroMQ", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "ChatStoreTests", dependencies: ["ChatStore", "ChatCore"]),
        .testTarget(name: "ChatConfigTests", dependencies: ["ChatConfig", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "ChatMetricsTests",
            dependencies: ["ChatMetrics", "ChatWire", .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        // Reads the sources: rules about the code that review alone did not keep.
        .testTarget(name: "SourceRulesTests"),
        .testTarget(
            name: "ChatWorkersTests",
            dependencies: [
                "ChatWorkers", "ChatStore", "ChatCore", "ChatWire", "ChatConfig",
                // EngineBatchTests: the batch semantics on a throwaway PostgreSQL too.
                "ChatPostgres", "ChatTesting",
                .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Crypto", package: "swift-crypto"),
                // WebhookPinTests: the webhooks worker's pinned client, used directly.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(name: "SystemdTests", dependencies: ["Systemd"]),
        // The engine-neutral store tests, on SQLite and (when installed) on a throwaway PostgreSQL.
        .testTarget(name: "StoreEngineTests", dependencies: ["ChatStore", "ChatPostgres", "ChatCore", "ChatTesting"]),
        .testTarget(
            name: "ChatSupervisorTests", dependencies: ["ChatSupervisor", "ChatWire", "ChatConfig", "ChatMetrics", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "ChatFrontendTests",
            dependencies: [
                "ChatFrontend", "ChatWorkers", "ChatBus", "ChatStore", "ChatConfig", "ChatWire", "ChatCore", "ZeroMQ",
                // SeededRandom, shared with the end-to-end fuzz tests.
                "ChatTesting",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOWebSocket", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "EndToEndTests", dependencies: [
            "ChatTesting", "ChatCore", "ChatWire", .product(name: "GRDB", package: "GRDB.swift"),
            // A stranger's bus client (EndToEnd.MultiHost's deployment).
            "ZeroMQ",
            // Webhook signatures checked with HMAC here, not with the server's own code.
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ]
)
