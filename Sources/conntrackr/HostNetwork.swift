import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// This host's network facts the CLI needs before it starts a capture.
enum HostNetwork {
    /// The interface holding the IPv4 default route, else the IPv6 one (from /proc/net).
    static func defaultRouteInterface() -> String? {
        if let table = try? readText("/proc/net/route") {
            for line in table.split(separator: "\n").dropFirst() {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                if fields.count > 2, fields[1] == "00000000" { return String(fields[0]) }
            }
        }
        if let table = try? readText("/proc/net/ipv6_route") {
            for line in table.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                if fields.count == 10, fields[0] == String(repeating: "0", count: 32), fields[1] == "00",
                    fields[9] != "lo"
                {
                    return String(fields[9])
                }
            }
        }
        return nil
    }

    static func readText(_ path: String) throws -> String {
        guard let file = fopen(path, "r") else { throw ConntrackrError(.invalidConfiguration, "cannot read \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
