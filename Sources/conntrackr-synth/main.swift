// Writes a synthetic capture for benchmarks: mostly established-flow segments, a quarter SYNs from tens of
// thousands of sources, some of them scanning. Deterministic for a given seed.
//
//   conntrackr-synth OUTPUT [--frames N] [--sources N] [--scanners N] [--seed N]
import ConnCore
import ConnTesting

#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String) -> Never {
    let line = Array("conntrackr-synth: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let output = arguments.first, !output.hasPrefix("-") else {
    fail("usage: conntrackr-synth OUTPUT [--frames N] [--sources N] [--scanners N] [--seed N]")
}
arguments.removeFirst()
var settings = ["frames": 2_000_000, "sources": 40_000, "scanners": 200, "seed": 1]
while arguments.count >= 2 {
    let name = String(arguments.removeFirst().drop { $0 == "-" })
    guard settings[name] != nil, let value = Int(arguments.removeFirst()), value >= 0 else {
        fail("unknown option or bad value: --\(name)")
    }
    settings[name] = value
}
guard arguments.isEmpty else { fail("unexpected argument: \(arguments[0])") }

var random = SplitMix64(seed: UInt64(settings["seed"]!))
let frames = settings["frames"]!
let sources = max(1, settings["sources"]!)
let scanners = min(settings["scanners"]!, sources)
// Sources come from 198.18.0.0/15, the range RFC 2544 sets aside for benchmarks (131,072 addresses).
func sourceAddress(_ index: Int) -> IPAddress {
    IPAddress(ipv4: 0xC612_0000 | UInt32(index & 0x1_FFFF))
}
let servers = (1...8).map { IPAddress(ipv4: 0xCB00_7100 | UInt32($0)) }  // 203.0.113.1-8
let v6Server = IPAddress("2001:db8::5")!

// Pre-built templates are cheap to vary: only ports change per frame, so build per (kind, source) lazily.
var writer = PcapWriter(linkType: .ethernet)
var time = Timestamp(seconds: 1_619_623_685)
var scannerNextPort = [UInt16](repeating: 1, count: scanners)
var written = 0
while written < frames {
    time = time + .microseconds(Int64.random(in: 1...40, using: &random))
    let roll = Int.random(in: 0..<100, using: &random)
    let frame: [UInt8]
    if roll < 25 {
        // 3% of frames come from the scanners, the rest of the SYNs from everyone else.
        let sourceIndex =
            roll < 3 && scanners > 0
            ? Int.random(in: 0..<scanners, using: &random) : Int.random(in: scanners..<max(scanners + 1, sources), using: &random)
        let source = sourceAddress(sourceIndex)
        let server = servers[sourceIndex % servers.count]
        if sourceIndex < scanners {
            // A scanner walks the port space of its server.
            let port = scannerNextPort[sourceIndex]
            scannerNextPort[sourceIndex] = port == 1024 ? 1 : port + 1
            frame = FrameBuilder.tcp(from: source, UInt16.random(in: 40000...60000, using: &random), to: server, port)
        } else if roll == 0 {
            frame = FrameBuilder.tcp(
                from: IPAddress("2001:db8:1::\(String(sourceIndex, radix: 16))")!, 50000, to: v6Server, 443
            )
        } else {
            let port: UInt16 = [22, 80, 443][sourceIndex % 3]
            frame = FrameBuilder.tcp(from: source, UInt16.random(in: 1024...65535, using: &random), to: server, port)
        }
    } else {
        // Established traffic: ACK and PSH|ACK segments both ways.
        let sourceIndex = Int.random(in: scanners..<max(scanners + 1, sources), using: &random)
        let client = sourceAddress(sourceIndex)
        let server = servers[sourceIndex % servers.count]
        let clientPort = UInt16(1024 + sourceIndex % 60000)
        if roll < 60 {
            frame = FrameBuilder.tcp(from: client, clientPort, to: server, 443, flags: [.ack, .psh], payload: Array(repeating: 0x41, count: 64))
        } else {
            frame = FrameBuilder.tcp(from: server, 443, to: client, clientPort, flags: .ack)
        }
    }
    writer.write(frame, at: time)
    written += 1
}
let bytes = writer.bytes
guard let file = fopen(output, "wb") else { fail("cannot write \(output)") }
let count = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
fclose(file)
guard count == bytes.count else { fail("short write to \(output)") }
print("wrote \(written) frames to \(output)")
