import CPrivileges
import ConnCore

/// Linux capabilities, by number, that a running agent may still need.
enum Capability: Int, CaseIterable, Sendable {
    case netAdmin = 12
    case netRaw = 13
    case sysAdmin = 21
    case perfmon = 38
    case bpf = 39

    var name: String {
        switch self {
        case .netAdmin: "CAP_NET_ADMIN"
        case .netRaw: "CAP_NET_RAW"
        case .sysAdmin: "CAP_SYS_ADMIN"
        case .perfmon: "CAP_PERFMON"
        case .bpf: "CAP_BPF"
        }
    }

    /// What a running agent still needs once its program is attached, its capture open and its port bound:
    /// - editing pinned BPF maps (XDP blocking, SIGHUP allowlist sync): `CAP_BPF`;
    /// - running `nft` (nftables blocking): `CAP_NET_ADMIN`, which the child inherits;
    /// - detaching an XDP program at exit: `CAP_NET_ADMIN`.
    /// A pcap-only agent needs none: its socket is open and filtered already.
    static func keptAfterStartUp(_ settings: AgentSettings) -> Set<Capability> {
        var kept: Set<Capability> = []
        if settings.block == .xdp { kept.insert(.bpf) }
        if settings.block == .nftables || settings.block == .xdp || settings.source == .xdp { kept.insert(.netAdmin) }
        return kept
    }
}

/// Drops every capability but `kept` and sets no_new_privs, so a compromised agent cannot regain them.
/// - Throws: ``ConntrackrError`` with the errno when the kernel refuses.
func dropPrivileges(keeping kept: Set<Capability>) throws {
    let mask = kept.reduce(UInt64(0)) { $0 | (1 << UInt64($1.rawValue)) }
    let result = ct_keep_only_capabilities(mask)
    guard result == 0 else {
        throw ConntrackrError(.missingPrivilege, "cannot drop capabilities (errno \(-result))")
    }
}
