public import ConnCore

/// Decides how the local blocklist must change to match what the fleet store holds. Pure: no store, no blocker.
///
/// The rules, per prefix, given the local entry and the fleet's record for it:
/// - a local entry of this agent's own (origin `local`) is never touched by the fleet, with one exception: when
///   this agent's own record of that block was in the store and is gone (``update(local:changes:withdrawn:now:)``
///   sees it deleted, or ``reconcile(local:listed:withdrawn:now:)`` no longer lists it) more than ``expiryMargin``
///   before the block expires, someone lifted the block fleet-wide (`conntrackr blocklist remove --fleet-etcd
///   ...`, `etcdctl del`), and the entry goes too. Nearer its expiry, a deletion is the lease lapsing and the
///   local sweep lifts it as `expired`;
/// - a record not yet expired, with no local entry: add it, as a `fleet` entry;
/// - a record with a `fleet` entry whose expiry differs: replace the entry (a host published the block again);
/// - a `fleet` entry with no record: remove it (its lease lapsed or someone deleted it);
/// - an expired record: changes nothing; the local expiry sweep lifts the entry as `expired`.
public enum FleetReconciler: Sendable {
    /// What to change locally.
    public struct Plan: Hashable, Sendable {
        /// Entries to apply (through ``ConnCore/BlockController/applyLearned(_:at:)``), by prefix order.
        public var add: [BlockEntry] = []
        /// Fleet entries to lift, by prefix order.
        public var remove: [IPPrefix] = []

        public init(add: [BlockEntry] = [], remove: [IPPrefix] = []) {
            self.add = add
            self.remove = remove
        }

        public var isEmpty: Bool { add.isEmpty && remove.isEmpty }
    }

    /// The plan after a full listing: every fleet entry not listed goes, every listed record missing comes.
    /// - Parameters:
    ///   - local: the blocker's entries, of every origin.
    ///   - listed: the records under the fleet prefix; for a prefix listed twice, the later expiry wins.
    ///   - withdrawn: this agent's own records that an earlier listing or watch saw and this listing lacks.
    public static func reconcile(
        local: [BlockEntry],
        listed: [FleetRecord],
        withdrawn: [IPPrefix: FleetRecord] = [:],
        now: Timestamp
    ) -> Plan {
        var records: [IPPrefix: FleetRecord] = [:]
        for record in listed {
            if let other = records[record.prefix], !expiresLater(record, than: other) { continue }
            records[record.prefix] = record
        }
        let localByPrefix = Dictionary(local.map { ($0.prefix, $0) }, uniquingKeysWith: { first, _ in first })
        var plan = Plan()
        for prefix in Set(records.keys).union(localByPrefix.keys) {
            let local = localByPrefix[prefix]
            decide(local: local, record: records[prefix], withdrawn: withdrawn[prefix], now: now, into: &plan)
        }
        return plan.sorted()
    }

    /// How near its expiry a local block must be for the deletion of its own record to count as the lease lapsing
    /// rather than a fleet-wide unblock (lease expiry and the local sweep each run up to a second late).
    public static let expiryMargin: Duration = .seconds(3)

    /// The plan for changes seen by a watch, in order: the last change of each prefix decides it.
    /// - Parameters:
    ///   - changes: each prefix with its new record, or `nil` when its key was deleted.
    ///   - withdrawn: for deleted keys that held this agent's own record, that record.
    public static func update(
        local: [BlockEntry],
        changes: [(prefix: IPPrefix, record: FleetRecord?)],
        withdrawn: [IPPrefix: FleetRecord] = [:],
        now: Timestamp
    ) -> Plan {
        var last: [IPPrefix: FleetRecord?] = [:]
        for change in changes { last[change.prefix] = .some(change.record) }
        let localByPrefix = Dictionary(local.map { ($0.prefix, $0) }, uniquingKeysWith: { first, _ in first })
        var plan = Plan()
        for (prefix, record) in last {
            decide(local: localByPrefix[prefix], record: record, withdrawn: withdrawn[prefix], now: now, into: &plan)
        }
        return plan.sorted()
    }

    /// Whether deleting `own`, this agent's record, lifts its local block `local`: it must be the record of that
    /// very block (the same start, which every blocker keeps to the nanosecond; an expiry read back from the XDP
    /// maps may differ by the clock conversion), deleted well before the block expires.
    private static func isUnblock(of local: BlockEntry, withdrawing own: FleetRecord, now: Timestamp) -> Bool {
        guard own.since == local.since else { return false }
        guard let expires = local.expires else { return true }
        return expires > now + expiryMargin
    }

    /// The rules of the type's documentation for one prefix; `withdrawn` is this agent's own record that its key
    /// held before it went, if any.
    private static func decide(
        local: BlockEntry?,
        record: FleetRecord?,
        withdrawn: FleetRecord?,
        now: Timestamp,
        into plan: inout Plan
    ) {
        if let local, local.origin != .fleet {
            if record == nil, let withdrawn, isUnblock(of: local, withdrawing: withdrawn, now: now) {
                plan.remove.append(local.prefix)
            }
            return
        }
        guard let record else {
            if let local { plan.remove.append(local.prefix) }
            return
        }
        if record.hasExpired(at: now) { return }
        let learned = record.learnedEntry
        if let local, local.expires == learned.expires, local.reason == learned.reason { return }
        plan.add.append(learned)
    }

    /// Whether `record` lasts longer than `other` (a permanent block lasts longest).
    private static func expiresLater(_ record: FleetRecord, than other: FleetRecord) -> Bool {
        switch (record.expires, other.expires) {
        case (nil, nil): record.since > other.since
        case (nil, _): true
        case (_, nil): false
        case (let mine?, let theirs?): mine > theirs
        }
    }
}

extension FleetReconciler.Plan {
    /// A stable order, so that logs and events do not depend on dictionary order.
    fileprivate func sorted() -> Self {
        func less(_ lhs: IPPrefix, _ rhs: IPPrefix) -> Bool {
            (lhs.address.high, lhs.address.low, lhs.length) < (rhs.address.high, rhs.address.low, rhs.length)
        }
        return Self(add: add.sorted { less($0.prefix, $1.prefix) }, remove: remove.sorted(by: less))
    }
}
