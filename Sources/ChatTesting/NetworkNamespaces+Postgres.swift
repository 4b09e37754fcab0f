import Foundation

extension NetworkNamespaces {
    /// The port of a PostgreSQL host (its own namespace: the default port is free).
    public static let postgresPort = 5432

    /// A PostgreSQL host: a throwaway server (`PostgresServer`: Debian's
    /// binaries, run as the `postgres` user, fsync off) inside `host`'s
    /// namespace, listening on its address, trusting the bridge's subnet
    /// (every host and the test); its data in `/tmp/cns<pid>-<host>`, a name
    /// `removeLeftovers` knows, so a crashed run's cluster goes at the next
    /// start. Stopped (fast shutdown) at teardown, after every chatd.
    public func startPostgres(on host: Host) throws -> PostgresServer {
        let server = try PostgresServer(
            directory: Self.leftoversDirectory + "/\(prefix)-\(host.name)", address: host.address, port: Self.postgresPort,
            trusting: "10.231.\(subnet).0/24", launcher: [Self.ipPath!, "netns", "exec", host.namespace]
        )
        atTearDown { server.stop() }
        return server
    }
}
