public import ConnCore
public import Logging

/// A block lifted across the fleet: its record's key is deleted, and every running agent's watch lifts its copy
/// (the agent that made the block included).
public enum FleetUnblock: Sendable {
    /// Deletes the fleet record of `blocked` from the store of `configuration`.
    /// - Returns: the key deleted.
    /// - Throws: ``ConnCore/ConntrackrError`` when the fleet has no record of `blocked`; a ``FleetError`` when the
    ///   store cannot be reached or refuses.
    public static func remove(
        _ blocked: IPPrefix,
        configuration: FleetConfiguration,
        logger: Logger = Logger(label: "conntrackr.blocklist")
    ) async throws -> String {
        let store = try EtcdStore(configuration: configuration.etcd, logger: logger)
        let key = FleetKeys(prefix: configuration.keyPrefix).key(for: blocked)
        let found: Bool
        do {
            found = try await store.delete(key: key)
        } catch {
            try? await store.shutdown()
            throw error
        }
        try? await store.shutdown()
        guard found else {
            throw ConntrackrError(
                .invalidConfiguration,
                "\(blocked) has no fleet record (\(key)); without fleet settings, remove removes it here"
            )
        }
        return key
    }
}
