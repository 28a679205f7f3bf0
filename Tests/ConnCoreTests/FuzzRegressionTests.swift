import ConnTesting
import Foundation
import FuzzSupport
import Testing

@testable import ConnCore

/// The committed fuzz inputs (seed corpus and crash regressions, `Tests/Fuzz`) replayed through the same property
/// checks the fuzz targets run, without sanitizers, plus one focused test per bug the fuzzers found.
@Suite("Fuzz corpus and regressions")
struct FuzzRegressionTests {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz")

    /// The seed corpus and the regressions of one target, by file name.
    static func inputs(_ target: String) throws -> [(name: String, bytes: [UInt8])] {
        var found: [(String, [UInt8])] = []
        for kind in ["Corpus", "Regressions"] {
            let directory = fuzzDirectory.appendingPathComponent(kind).appendingPathComponent(target)
            guard FileManager.default.fileExists(atPath: directory.path) else { continue }
            for name in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() {
                let data = try Data(contentsOf: directory.appendingPathComponent(name))
                found.append(("\(kind)/\(target)/\(name)", Array(data)))
            }
        }
        return found
    }

    @Test("Every committed FuzzFrameParser input keeps the parser's properties")
    func frameParserInputs() throws {
        let inputs = try Self.inputs("FuzzFrameParser")
        #expect(inputs.count > 100)
        for (name, bytes) in inputs where !bytes.isEmpty {
            let linkType = FuzzLinkTypes.all[Int(bytes[0]) % FuzzLinkTypes.all.count]
            let violations = Array(bytes.dropFirst()).withUnsafeBytes {
                FrameParserProperties.violations($0, linkType: linkType)
            }
            #expect(violations.isEmpty, "\(name): \(violations)")
        }
    }

    @Test("Every committed FuzzPipeline input runs like the model")
    func pipelineInputs() throws {
        let inputs = try Self.inputs("FuzzPipeline")
        #expect(inputs.count > 10)
        for (name, bytes) in inputs {
            let violations = bytes.withUnsafeBytes { PipelineProperties.violations(PipelineFuzzInput($0)) }
            #expect(violations.isEmpty, "\(name): \(violations)")
        }
    }

    @Test("Every committed FuzzAllowlist input keeps the text parsers' properties")
    func allowlistInputs() throws {
        let inputs = try Self.inputs("FuzzAllowlist")
        #expect(inputs.count > 5)
        for (name, bytes) in inputs {
            let violations = bytes.withUnsafeBytes { AllowlistFuzzInput.violations($0) }
            #expect(violations.isEmpty, "\(name): \(violations)")
        }
    }

    // MARK: Bugs found by fuzzing

    struct Key: RecencyKey {
        var value: UInt64
        func hash(seed: UInt64) -> UInt64 { mixHash(seed, value) }
    }

    /// FuzzPipeline, `Regressions/FuzzPipeline/recency-grow-*`: the insert that made a table grow placed its key in
    /// the bucket array twice; once the key was removed, the stale copy resolved a later lookup of the same key to
    /// the freed slot, which corrupted the recency list and could hang the capture thread. Checked on the table
    /// itself, so that a regression fails here instead of hanging the pipeline tests.
    @Test("A key inserted as the table grows is not found once removed", arguments: [1, 2, 3] as [UInt64])
    func tableGrowth(seed: UInt64) {
        let table = RecencyTable<Key, Void>(capacity: 64, seed: seed)
        // The ninth key takes the bucket array from 16 to 32 entries.
        let slots = (1...9).map { table.insert(Key(value: $0), value: (), at: 0).slot }
        table.remove(slot: slots[8])
        #expect(table.find(Key(value: 9)) == nil)
        #expect(table.count == 8)
        for (index, slot) in slots.dropLast().enumerated() {
            #expect(table.find(Key(value: UInt64(index + 1))) == slot)
        }
    }

    @Test("Random inserts, lookups and removals agree with a dictionary", arguments: 0..<24)
    func tableAgainstDictionary(run: Int) {
        var random = SplitMix64(seed: UInt64(run))  // the same operations on every run of the test
        let capacity = [1, 2, 7, 16, 33, 64][run % 6]
        let table = RecencyTable<Key, Void>(capacity: capacity, seed: UInt64(run))
        var model: [UInt64: Int32] = [:]
        var order: [UInt64] = []  // least recently inserted first; no touches here, so it is the eviction order
        for step in 0..<2000 {
            let key = UInt64.random(in: 0..<100, using: &random)
            let found = table.find(Key(value: key))
            // Stop at the first disagreement: operating on a corrupted table could loop forever.
            guard found == model[key] else {
                let expected = String(describing: model[key])
                Issue.record("run \(run) step \(step): find(\(key)) = \(String(describing: found)), not \(expected)")
                return
            }
            if let slot = found, Bool.random(using: &random) {
                table.remove(slot: slot)
                model[key] = nil
                order.removeAll { $0 == key }
            } else if found == nil {
                let inserted = table.insert(Key(value: key), value: (), at: Int64(step))
                if model.count == capacity {
                    #expect(inserted.evicted?.value == order.first)
                    model[order.removeFirst()] = nil
                }
                model[key] = inserted.slot
                order.append(key)
            }
            guard table.count == model.count else {
                Issue.record("run \(run) step \(step): \(table.count) keys, expected \(model.count)")
                return
            }
        }
    }

    /// FuzzAllowlist, `Regressions/FuzzAllowlist/nul-in-address`: `inet_pton` stops at a NUL, so the text before
    /// it was accepted as the whole address.
    @Test(
        "Address text with a NUL in it does not parse",
        arguments: [
            "198.51.100.7\0", "198.51.100.7\0junk", "fe80::1:2:3\0:4", "2001:db8::/32\0", "198.51.100.0\0/24",
        ]
    )
    func nulInAddress(text: String) {
        #expect(IPAddress(text) == nil)
        #expect(IPPrefix(text) == nil)
    }

    /// FuzzAllowlist, `Regressions/FuzzAllowlist/signed-prefix-length`: `Int` accepted a sign, so `/-0` was /0.
    @Test(
        "A prefix length is one to three decimal digits",
        arguments: [
            ("198.51.100.7/+24", nil), ("198.51.100.7/-0", nil), ("2001:db8::/+64", nil), ("198.51.100.7/ 24", nil),
            ("198.51.100.7/", nil), ("198.51.100.7/0024", nil), ("198.51.100.7/24", "198.51.100.0/24"),
            ("198.51.100.7/024", "198.51.100.0/24"), ("2001:db8::1/128", "2001:db8::1/128"), ("0.0.0.0/0", "0.0.0.0/0"),
        ] as [(String, String?)]
    )
    func prefixLengthDigits(text: String, expected: String?) {
        #expect(IPPrefix(text)?.description == expected)
    }
}
