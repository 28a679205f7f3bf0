// Writes the committed seed corpus of the fuzz targets, deterministically:
//
//   swift run FuzzSeeds Tests/Fuzz/Corpus Tests/ConnCaptureTests/Captures
//
// Each target's directory is emptied and rewritten: FuzzFrameParser gets SeedFrames and distinct frames of every
// committed capture, FuzzPipeline the captures as frame sequences plus scenarios (scans, cap overflow,
// retransmissions, clock steps, damaged frames), FuzzAllowlist address and prefix lines and an allow file.
import CPcap
import ConnCore
import ConnTesting
import FuzzSupport

#if canImport(Glibc)
    import Glibc
#endif

func fail(_ message: String) -> Never {
    let line = Array("FuzzSeeds: \(message)\n".utf8)
    _ = line.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    exit(1)
}

/// The frames of a capture file, with their link type and timestamps.
func readCapture(_ path: String) -> (LinkType, [(Timestamp, [UInt8])]) {
    var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
    guard let handle = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer)
    else { fail("cannot read \(path)") }
    defer { pcap_close(handle) }
    guard let linkType = LinkType(rawValue: pcap_datalink(handle)) else { fail("\(path): unknown link type") }
    var frames: [(Timestamp, [UInt8])] = []
    var header: UnsafeMutablePointer<pcap_pkthdr>?
    var data: UnsafePointer<UInt8>?
    while pcap_next_ex(handle, &header, &data) == 1, let header, let data {
        let time = Timestamp(
            clampingSeconds: Int64(header.pointee.ts.tv_sec),
            nanosecondsPastSecond: Int64(header.pointee.ts.tv_usec)
        )
        frames.append((time, Array(UnsafeBufferPointer(start: data, count: Int(header.pointee.caplen)))))
    }
    return (linkType, frames)
}

func write(_ bytes: [UInt8], to path: String) {
    guard let file = fopen(path, "wb") else { fail("cannot write \(path)") }
    let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    guard fclose(file) == 0, written == bytes.count else { fail("short write to \(path)") }
}

/// Empties (or creates) a target's corpus directory.
func resetDirectory(_ path: String) {
    mkdir(path, 0o755)
    guard let directory = opendir(path) else { fail("cannot open \(path)") }
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { unlink("\(path)/\(name)") }
    }
    closedir(directory)
}

let arguments = CommandLine.arguments
guard arguments.count == 3 else { fail("usage: FuzzSeeds CORPUS_DIR CAPTURES_DIR") }
let corpus = arguments[1]
let captures = arguments[2]
let captureNames = [
    "any-linux-sll.pcap", "any-linux-sll2.pcap", "benign-v4.pcap", "mixed-nano.pcap", "mixed-nano.pcapng",
    "nmap-syn-scan-v4.pcap", "nmap-syn-scan-v6.pcap", "vlan-8021q.pcap", "vlan-qinq.pcap",
]
let loaded = captureNames.map { name in
    (String(name.prefix { $0 != "." }) + (name.hasSuffix("ng") ? "-ng" : ""), readCapture("\(captures)/\(name)"))
}

// FuzzFrameParser: one selector byte, then the frame.
let parserDirectory = "\(corpus)/FuzzFrameParser"
resetDirectory(parserDirectory)
for frame in SeedFrames.all {
    write([FuzzLinkTypes.selector(for: frame.linkType)] + frame.bytes, to: "\(parserDirectory)/\(frame.name)")
}
for (name, (linkType, frames)) in loaded {
    // One frame per (verdict, length, TCP flags byte if any): the captures repeat a few shapes many times.
    var shapes = Set<String>()
    for (index, (_, bytes)) in frames.enumerated() {
        let verdict = bytes.withUnsafeBytes { FrameParser.classify($0, linkType: linkType) }
        let kind: String
        switch verdict {
        case .attempt: kind = "attempt"
        case .other: kind = "other"
        case .malformed(let reason): kind = reason.rawValue
        case .fragment: kind = "fragment"
        }
        guard shapes.insert("\(kind)/\(bytes.count)").inserted else { continue }
        write([FuzzLinkTypes.selector(for: linkType)] + bytes, to: "\(parserDirectory)/capture-\(name)-\(index)")
    }
}

// FuzzPipeline: whole captures as sequences, with the default threshold and caps small enough to evict.
let pipelineDirectory = "\(corpus)/FuzzPipeline"
resetDirectory(pipelineDirectory)
for (name, (linkType, frames)) in loaded {
    var writer = PipelineFuzzInputWriter(threshold: 3, windows: 0x0F, pairCap: 63, connectionCap: 31)
    var previous = frames.first?.0 ?? Timestamp(nanoseconds: 0)
    for (index, (time, bytes)) in frames.enumerated() {
        // Time steps are 20 ms units, at most 0xEF of them.
        let step = UInt8(min(0xEF, max(0, (time.nanoseconds - previous.nanoseconds) / 20_000_000)))
        previous = time
        writer.frame(bytes, linkType: linkType, step: step)
        if index % 16 == 15 { writer.endOfBatch(step: 0) }
    }
    writer.endOfBatch(step: 0)
    write(writer.bytes, to: "\(pipelineDirectory)/capture-\(name)")
}
do {
    // One source walks 20 ports of one destination (IPv4), then one of IPv6 on another link layer.
    var scan = PipelineFuzzInputWriter(threshold: 3, windows: 0x05, pairCap: 7, connectionCap: 15)
    for port in 0..<20 {
        scan.segment(source: 1, destination: 0, sourcePort: UInt8(port), destinationPort: UInt16(20 + port), step: 5)
    }
    scan.endOfBatch(step: 60)
    for port in 0..<20 {
        scan.segment(
            source: 0x82,
            destination: 1,
            sourcePort: 9,
            destinationPort: UInt16(1000 + port),
            link: 3,
            step: 5
        )
    }
    scan.endOfBatch(step: 0)
    write(scan.bytes, to: "\(pipelineDirectory)/scan-v4-v6")

    // More pairs and 4-tuples than the caps hold, with every link layer and flag choice.
    var flood = PipelineFuzzInputWriter(threshold: 2, windows: 0x0A, pairCap: 4, connectionCap: 6)
    for index in 0..<96 {
        let source = UInt8(index % 16) | (index % 3 == 0 ? 0x80 : 0)
        flood.segment(
            source: source,
            destination: UInt8(index % 4),
            sourcePort: UInt8(index),
            destinationPort: UInt16(index % 7),
            flags: UInt8(index % 8),
            link: UInt8(index % 5),
            step: UInt8(index % 3)
        )
        if index % 10 == 9 { flood.endOfBatch(step: 1) }
    }
    write(flood.bytes, to: "\(pipelineDirectory)/flood-caps")

    // Retransmissions inside and outside the window, a quiet spell that lets a pair be reported again, and the
    // clock stepping backwards.
    var retransmit = PipelineFuzzInputWriter(threshold: 1, windows: 0x00, pairCap: 8, connectionCap: 8)
    for step: UInt8 in [0, 10, 20, 40, 0, 60, 0xF3, 0xF9, 1, 2] {
        retransmit.segment(source: 3, destination: 2, sourcePort: 7, destinationPort: 443, step: step)
        retransmit.segment(source: 3, destination: 2, sourcePort: 8, destinationPort: 444, step: 0)
        retransmit.endOfBatch(step: 0)
    }
    write(retransmit.bytes, to: "\(pipelineDirectory)/retransmit-clock")

    // Damaged segments among good ones, and raw frames of the seed set.
    var damaged = PipelineFuzzInputWriter(threshold: 0, windows: 0x03, pairCap: 2, connectionCap: 2)
    for index in 0..<40 {
        damaged.segment(
            source: UInt8(index % 5),
            destination: 0,
            sourcePort: 1,
            destinationPort: UInt16(index),
            link: UInt8(index % 5),
            step: 3,
            damage: index % 2 == 0 ? (UInt8(truncatingIfNeeded: index * 7), UInt8(1 << (index % 8))) : nil
        )
    }
    for frame in SeedFrames.all.prefix(40) { damaged.frame(frame.bytes, linkType: frame.linkType, step: 1) }
    damaged.endOfBatch(step: 0)
    write(damaged.bytes, to: "\(pipelineDirectory)/damaged-frames")
}

// FuzzAllowlist: lines of addresses and prefixes, valid and not.
let allowDirectory = "\(corpus)/FuzzAllowlist"
resetDirectory(allowDirectory)
let allowSeeds: [(String, String)] = [
    ("ipv4", "198.51.100.7"),
    ("ipv4-prefixes", "198.51.100.0/24\n203.0.113.9/32\n0.0.0.0/0\n255.255.255.255\n198.51.100.7/24"),
    ("ipv6", "2001:db8::1\n::\n::1\nfe80::1:2:3:4\n2001:db8:0:0:1:0:0:1\n2001:0db8:0000:0000:0000:0000:0000:0001"),
    ("ipv6-prefixes", "2001:db8::/32\n2001:db8:42::/48\n::/0\n::1/128\n2001:db8::1/64"),
    ("mapped", "::ffff:198.51.100.7\n::ffff:198.51.100.0/120\n::198.51.100.7\n64:ff9b::198.51.100.7"),
    (
        "invalid",
        "198.51.100.256\n198.51.100\n01.2.3.4\n1.2.3.4/33\n2001:db8::/129\n2001:db8:::1\nfe80::1%eth0\n"
            + "1.2.3.4/\n/24\n1.2.3.4/24/8\n 1.2.3.4"
    ),
    (
        "allow-file",
        "# office and monitoring\n198.51.100.0/24\n2001:db8:42::/48   # trailing comment\n203.0.113.9\r\n\n\t\n"
    ),
]
for (name, text) in allowSeeds { write(Array(text.utf8), to: "\(allowDirectory)/\(name)") }
print("wrote the seed corpus under \(corpus)")
