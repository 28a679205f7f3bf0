import ConnTesting
import Testing

@testable import ConnCore

/// The retransmit filter's table doubles in place; every entry must still be found after each doubling, including
/// entries whose probe wrapped past the end of the old table and clusters that the doubling splits.
@Suite("Retransmit fingerprint table")
struct FingerprintTableTests {
    /// A fingerprint as the filter makes them: nonzero, without the waiting bit.
    static func fingerprint(_ random: inout SplitMix64, homeBits: UInt64) -> UInt64 {
        var value = UInt64.random(in: 1 ... .max, using: &random) & ~FingerprintTable.waitingBit
        // Low bits held at zero crowd the entries into fewer home lines: long clusters, wrapping around the end.
        value = (value & ~0xFFFF) | (value & homeBits)
        return value == 0 ? 1 : value
    }

    /// Every fingerprint in `model` is found with its time, and `absent` ones are not.
    static func check(_ table: FingerprintTable, _ model: [UInt64: Int64], absent: [UInt64]) -> String? {
        for (fingerprint, time) in model {
            guard let slot = table.find(fingerprint) else { return "\(fingerprint) lost" }
            guard table.lastSeen(slot) == time else { return "\(fingerprint) has time \(table.lastSeen(slot))" }
        }
        for fingerprint in absent where model[fingerprint] == nil {
            if table.find(fingerprint) != nil { return "\(fingerprint) found but never inserted" }
        }
        return nil
    }

    @Test(
        "Entries survive every doubling, wrapped and crowded clusters included",
        arguments: [0xFFFF, 0xFFF0, 0xFFE0] as [UInt64]
    )
    func doublingKeepsEveryEntry(homeBits: UInt64) {
        var random = SplitMix64(seed: homeBits)
        var table = FingerprintTable(capacity: 20_000)
        defer { table.deallocate() }
        var model: [UInt64: Int64] = [:]
        var absent: [UInt64] = []
        for step in 0..<20_000 {
            let fingerprint = Self.fingerprint(&random, homeBits: homeBits)
            if let slot = table.find(fingerprint) {
                guard model[fingerprint] != nil else {
                    Issue.record("step \(step): \(fingerprint) found before it was inserted")
                    return
                }
                table.refresh(slot, to: Int64(step))
                model[fingerprint] = Int64(step)
            } else {
                let inserted = table.insert(fingerprint, at: Int64(step))
                #expect(inserted)
                model[fingerprint] = Int64(step)
            }
            absent.append(Self.fingerprint(&random, homeBits: homeBits))
            // After each doubling (1,024 slots, then 2,048, ...): the entries just moved are the ones at risk.
            if step.nonzeroBitCount == 1 || step % 1000 == 999 {
                if let failure = Self.check(table, model, absent: absent) {
                    Issue.record("step \(step), \(model.count) entries: \(failure)")
                    return
                }
            }
        }
        #expect(table.count == model.count)
        #expect(Self.check(table, model, absent: absent) == nil)
    }

    /// The entries of the last home line overflow past the end of the 1,024 slots into the first lines; then the
    /// table doubles, and about half of them move to the new last line of the lower half, the rest to the end.
    @Test("A cluster that wraps past the end of the table is found after a doubling", arguments: 0..<16)
    func wrappedClusterSurvivesDoubling(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var table = FingerprintTable(capacity: 1_000)
        defer { table.deallocate() }
        var model: [UInt64: Int64] = [:]
        func add(_ fingerprint: UInt64) {
            guard model[fingerprint] == nil else { return }
            let inserted = table.insert(fingerprint, at: Int64(model.count))
            #expect(inserted)
            model[fingerprint] = Int64(model.count)
        }
        // 12 entries whose home is slot 1,020: they fill 1,020-1,023 and wrap into 0-7.
        while model.count < 12 {
            add((UInt64.random(in: 1 ... .max, using: &random) & ~FingerprintTable.waitingBit) & ~0x3FF | 1_020)
        }
        // Entries elsewhere, until the insert that doubles the table (at 513) and some more.
        while model.count < 600 {
            let fingerprint = UInt64.random(in: 1 ... .max, using: &random) & ~FingerprintTable.waitingBit
            if fingerprint & 0x3FF < 1_016 { add(fingerprint) }
        }
        #expect(Self.check(table, model, absent: []) == nil)
    }

    @Test("A full table refuses; emptied, it starts small and fills again")
    func capacityAndReuse() {
        var random = SplitMix64(seed: 7)
        var table = FingerprintTable(capacity: 70_000)
        defer { table.deallocate() }
        for round in 0..<3 {
            var model: [UInt64: Int64] = [:]
            while model.count < 70_000 {
                let fingerprint = Self.fingerprint(&random, homeBits: 0xFFFF)
                guard model[fingerprint] == nil else { continue }
                let inserted = table.insert(fingerprint, at: Int64(round))
                #expect(inserted)
                model[fingerprint] = Int64(round)
            }
            let pastCapacity = table.insert(Self.fingerprint(&random, homeBits: 0xFFFF), at: 0)
            #expect(!pastCapacity)
            #expect(table.count == 70_000)
            #expect(Self.check(table, model, absent: []) == nil)
            table.removeAll()
            #expect(table.count == 0)
            #expect(model.keys.allSatisfy { table.find($0) == nil })
        }
    }
}
