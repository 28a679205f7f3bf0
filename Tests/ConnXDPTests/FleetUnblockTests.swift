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
}
