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
    /// - changing nftables sets through libnftables' netlink socket (nftables blocking): `CAP_NET_ADMIN`.
    ///
    /// Nothing else: the XDP program is attached through a BPF link that is not pinned, so closing the link
    /// detaches it (no `CAP_NET_ADMIN`, which `test-xdp-block` checks by detaching at SIGINT), and a new capture
    /// filter for changed addresses goes on the capture's own socket. A pcap-only agent needs none.
    static func keptAfterStartUp(_ settings: AgentSettings) -> Set<Capability> {
        var kept: Set<Capability> = []
        if settings.block == .xdp { kept.insert(.bpf) }
        if settings.block == .nftables { kept.insert(.netAdmin) }
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
