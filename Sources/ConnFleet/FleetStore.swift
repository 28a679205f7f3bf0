/// The shared store fleet mode publishes blocks to and learns them from: the small part of etcd's v3 API it uses.
///
/// ``EtcdStore`` talks to a real etcd; ``InMemoryFleetStore`` is a fake with the same revision semantics, for tests.
/// Every change to the store gets a new, higher revision; a listing says the revision it reflects, and a watch from
/// the revision after it delivers every later change exactly once.
public protocol FleetStore: Sendable {
    /// Grants a lease that lapses after `ttl` unless renewed; keys put with it are deleted when it lapses.
    /// - Returns: the lease's identifier.
    func grantLease(ttl: Duration) async throws -> Int64

    /// Stores `value` under `key`, attached to `lease` (`nil`: kept until deleted).
    func put(key: String, value: [UInt8], lease: Int64?) async throws

    /// Every key under `prefix` with its value, and the store revision the listing reflects.
    func list(prefix: String) async throws -> FleetListing

    /// The changes under `prefix` from `revision` on (inclusive), in revision order, a batch per store revision or
    /// group of revisions. The sequence ends with an error when the connection is lost or the revision has been
    /// compacted; it never ends without one while the store is up.
    func watch(prefix: String, fromRevision revision: Int64) -> AsyncThrowingStream<[FleetChange], any Error>

    /// Deletes `key`; deleting a missing key is not an error.
    /// - Returns: whether there was a key to delete.
    @discardableResult
    func delete(key: String) async throws -> Bool

    /// Throws when the store cannot be reached, so that a connection that died silently is noticed.
    func checkHealth() async throws

    /// Releases connections; the store is not used afterwards.
    func shutdown() async throws
}

/// A key and its value as stored.
public struct FleetKeyValue: Hashable, Sendable {
    public var key: String
    public var value: [UInt8]
    /// The revision of the key's last change.
    public var modRevision: Int64
    /// The lease the key is attached to, or 0.
    public var lease: Int64

    public init(key: String, value: [UInt8], modRevision: Int64, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.modRevision = modRevision
        self.lease = lease
    }
}

/// The keys under a prefix at one store revision.
public struct FleetListing: Hashable, Sendable {
    public var values: [FleetKeyValue]
    /// The store revision the listing reflects: watch from `revision + 1` to miss nothing.
    public var revision: Int64
    /// Keys under the prefix left unread because the listing reached its bounds (keys or bytes).
    public var omitted: Int

    public init(values: [FleetKeyValue], revision: Int64, omitted: Int = 0) {
        self.values = values
        self.revision = revision
        self.omitted = omitted
    }
}

/// One change seen by a watch.
public enum FleetChange: Hashable, Sendable {
    /// A key was created or changed.
    case put(FleetKeyValue)
    /// A key was deleted (by hand, or because its lease lapsed) at `revision`.
    case delete(key: String, revision: Int64)

    /// The store revision of the change.
    public var revision: Int64 {
        switch self {
        case .put(let value): value.modRevision
        case .delete(_, let revision): revision
        }
    }

    /// The key changed.
    public var key: String {
        switch self {
        case .put(let value): value.key
        case .delete(let key, _): key
        }
    }
}

/// A fleet failure: a code to match on and one line for the user.
public struct FleetError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unavailable, unauthenticated, rejected, compacted, malformedResponse, malformedRecord
            case invalidConfiguration, tooLarge
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The store could not be reached, or the connection was lost: retry later.
        public static let unavailable = Code(.unavailable)
        /// The store refused the credentials, or needs some.
        public static let unauthenticated = Code(.unauthenticated)
        /// The store refused a request that will not succeed by retrying it (permission denied, invalid argument).
        public static let rejected = Code(.rejected)
        /// A watch asked for a revision the store no longer keeps: list again.
        public static let compacted = Code(.compacted)
        /// The store answered something that is not its API.
        public static let malformedResponse = Code(.malformedResponse)
        /// A stored value is not a fleet record.
        public static let malformedRecord = Code(.malformedRecord)
        /// A fleet setting is wrong (an endpoint, a TLS file).
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The store's answer was over the largest read (a page of large values): ask for less.
        public static let tooLarge = Code(.tooLarge)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// One line for the user, naming the endpoint, key or file involved.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// The range end that selects every key starting with `prefix` in etcd: the prefix with its last byte that is not
/// 0xff incremented, and what follows dropped; `[0]` (every key) when there is no such byte.
func rangeEnd(forPrefix prefix: [UInt8]) -> [UInt8] {
    var end = prefix
    while let last = end.last {
        if last < 0xff {
            end[end.count - 1] = last + 1
            return end
        }
        end.removeLast()
    }
    return [0]
}
