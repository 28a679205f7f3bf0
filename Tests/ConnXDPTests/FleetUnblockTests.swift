import ConnCore
import ConnFleet
import Testing

@testable import ConnXDP

/// The fleet's rules applied to entries as the blockers give them back, not as they were written.
@Suite("Fleet unblock of blocks read back from a blocker")
struct FleetUnblockTests {
    @Test("A block read back from the XDP maps is still recognised as this agent's own record's block")
    func xdpReadBack() {
        let now = Timestamp.now()
        let written = BlockEntry(
            prefix: IPPrefix("198.51.100.9")!, reason: .portScan, origin: .local, since: now, expires: now + .seconds(3600)
        )
        let own = FleetRecord(entry: written, scan: nil, host: "a")
        // Each conversion takes its own boot-to-wall offset, as a write and a later refresh of the copy do.
        for _ in 0..<20 {
            let value = PinnedBlockMaps.value(written, offset: bootToWallOffset())
            let readBack = PinnedBlockMaps.entry(written.prefix, value, offset: bootToWallOffset())
            #expect(readBack.since == written.since)
            let plan = FleetReconciler.update(
                local: [readBack], changes: [(written.prefix, nil)], withdrawn: [written.prefix: own], now: now
            )
            #expect(plan.remove == [written.prefix])
        }
    }

    @Test("An expiry of Int64.max read back through the boot-to-wall conversion never wraps into the past")
    func extremeExpiryReadBack() {
        let written = BlockEntry(
            prefix: IPPrefix("198.51.100.9")!, reason: .portScan, origin: .fleet, since: .now(),
            expires: Timestamp(nanoseconds: Int64.max)
        )
        let offset = bootToWallOffset()
        // Each conversion with its own offset, a little apart, as a write and a later read are.
        for drift: Int64 in [0, 1, 1000, -1000, 1_000_000_000] {
            let value = PinnedBlockMaps.value(written, offset: offset)
            let readBack = PinnedBlockMaps.entry(written.prefix, value, offset: offset + drift)
            #expect(readBack.expires.map { $0 > .now() } == true)
        }
        for expires in [Int64.min, Int64.min + 1, -1] {
            var early = written
            early.expires = Timestamp(nanoseconds: expires)
            let value = PinnedBlockMaps.value(early, offset: offset)
            // Already expired, for the program and read back.
            #expect(PinnedBlockMaps.entry(early.prefix, value, offset: offset).expires.map { $0 < .now() } == true)
        }
    }
}
