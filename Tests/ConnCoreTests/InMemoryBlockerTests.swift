import ConnCore
import ConnTesting
import Dispatch
import Testing

@Suite struct InMemoryBlockerTests {
    func entry(_ text: String, expiresAfter seconds: Int64? = 3600) -> BlockEntry {
        BlockEntry(
            prefix: prefix(text),
            reason: .portScan,
            since: referenceTime,
            expires: seconds.map { referenceTime + .seconds($0) }
        )
    }

    @Test func addListRemove() {
        let blocker = InMemoryBlocker()
        #expect(blocker.add(entry("198.51.100.7")))
        #expect(blocker.add(entry("2001:db8:0:bad::/64", expiresAfter: nil)))
        #expect(blocker.entries().map(\.prefix) == [prefix("198.51.100.7"), prefix("2001:db8:0:bad::/64")])
        #expect(blocker.remove(prefix("198.51.100.7")))
        #expect(!blocker.remove(prefix("198.51.100.7")))
        #expect(blocker.entries().map(\.prefix) == [prefix("2001:db8:0:bad::/64")])
    }

    @Test func addingTheSamePrefixReplacesItsEntry() {
        let blocker = InMemoryBlocker()
        #expect(blocker.add(entry("198.51.100.7", expiresAfter: 10)))
        #expect(blocker.add(entry("198.51.100.7", expiresAfter: 20)))
        #expect(blocker.count == 1)
        #expect(blocker.entries().first?.expires == referenceTime + .seconds(20))
    }

    @Test func capacityRefusesNewPrefixesButNotReplacements() {
        let blocker = InMemoryBlocker(capacity: 2)
        #expect(blocker.add(entry("198.51.100.1")))
        #expect(blocker.add(entry("198.51.100.2")))
        #expect(!blocker.add(entry("198.51.100.3")))
        #expect(blocker.add(entry("198.51.100.2", expiresAfter: 99)))
        #expect(blocker.entries().map(\.prefix) == [prefix("198.51.100.1"), prefix("198.51.100.2")])
        #expect(blocker.remove(prefix("198.51.100.1")))
        #expect(blocker.add(entry("198.51.100.3")))
    }

    @Test func zeroCapacityHoldsNothing() {
        let blocker = InMemoryBlocker(capacity: 0)
        #expect(!blocker.add(entry("198.51.100.1")))
        #expect(blocker.entries().isEmpty)
    }

    @Test func removeExpiredTakesOnlyDueEntriesAndKeepsPermanentOnes() {
        let blocker = InMemoryBlocker()
        _ = blocker.add(entry("198.51.100.1", expiresAfter: 10))
        _ = blocker.add(entry("198.51.100.2", expiresAfter: 20))
        _ = blocker.add(entry("198.51.100.3", expiresAfter: nil))
        #expect(blocker.removeExpired(asOf: referenceTime + .seconds(9)).isEmpty)
        // Expiry is inclusive: an entry is gone at its expiry time.
        #expect(blocker.removeExpired(asOf: referenceTime + .seconds(10)).map(\.prefix) == [prefix("198.51.100.1")])
        #expect(blocker.removeExpired(asOf: referenceTime + .seconds(10)).isEmpty)
        #expect(
            blocker.removeExpired(asOf: referenceTime + .seconds(1_000_000)).map(\.prefix) == [prefix("198.51.100.2")]
        )
        #expect(blocker.entries().map(\.prefix) == [prefix("198.51.100.3")])
    }

    @Test func concurrentAddsNeverExceedCapacity() {
        let blocker = InMemoryBlocker(capacity: 100)
        DispatchQueue.concurrentPerform(iterations: 1000) { index in
            _ = blocker.add(entry("2001:db8::\(String(index, radix: 16))"))
        }
        #expect(blocker.count == 100)
    }
}
