public import ConnCore
public import Logging

/// A block lifted across the fleet: every host's report of it is deleted, and every running agent's watch lifts its
/// copy (the agents that made the block included).
public enum FleetUnblock: Sendable {
    /// Deletes every fleet report of `blocked` (one key per reporting host) from the store of `configuration`.
    /// - Returns: the keys deleted.
    /// - Throws: ``ConnCore/ConntrackrError`` when the fleet has no report of `blocked`; a ``FleetError`` when the
    ///   store cannot be reached or refuses (deleting other hosts' keys needs etcd's operator role, see README).
    public static func remove(
        _ blocked: IPPrefix,
        configuration: FleetConfiguration,
        logger: Logger = Logger(label: "conntrackr.blocklist")
    ) async throws -> [String] {
        let store = try EtcdStore(configuration: configuration.etcd, logger: logger)
        do {
            let deleted = try await remove(blocked, keyPrefix: configuration.keyPrefix, store: store)
            try? await store.shutdown()
            return deleted
        } catch {
            try? await store.shutdown()
            throw error
        }
    }

    /// Deletes every report of `blocked` under `keyPrefix` in `store`.
    /// - Returns: the keys deleted.
    public static func remove(_ blocked: IPPrefix, keyPrefix: String, store: any FleetStore) async throws -> [String] {
        let keys = FleetKeys(prefix: keyPrefix)
        let listing = try await store.list(prefix: keys.prefix)
        var deleted: [String] = []
        for value in listing.values where keys.parse(value.key)?.blocked == blocked {
            if try await store.delete(key: value.key) { deleted.append(value.key) }
        }
        guard !deleted.isEmpty else {
            throw ConntrackrError(
                .invalidConfiguration,
                "\(blocked) has no fleet record under \(keys.prefix); without fleet settings, remove removes it here"
            )
        }
        return deleted
    }
}
