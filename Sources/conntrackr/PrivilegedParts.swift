import ConnBlock
import ConnCapture
import ConnCore
import ConnXDP
import Logging

/// The first phase of start-up: everything that needs privileges, done while the process still has one thread, so
/// that dropping capabilities afterwards covers the whole process (capabilities are per thread, and threads made
/// later inherit the dropped set).
struct PrivilegedParts {
    let source: any PacketSource
    let blocker: (any Blocker)?
    let allowlist: Allowlist
    /// The XDP program's counters while the XDP source runs, for metrics.
    let xdpStatistics: (@Sendable () throws -> XDPStatistics?)?
    /// The program's scan-rule counters, when it enforces the rule.
    let kernelScanStatistics: (@Sendable () throws -> KernelScanStatistics?)?
    /// Undo what was set up in the kernel, in order, when the agent stops.
    let cleanups: [@Sendable () -> Void]

    static func open(settings: AgentSettings, logger: Logger) throws -> PrivilegedParts {
        guard let interface = try settings.interface ?? DefaultRoutes.preferredInterface(DefaultRoutes.read()) else {
            throw ConntrackrError(.noSuchInterface, "no default route to pick an interface from: pass --interface")
        }
        var cleanups: [@Sendable () -> Void] = []
        let allowlist = try HostAllowlist(settings: settings).build()
        let destinations = settings.allDestinations ? nil : try HostAddresses.current()
        let mode = settings.xdpMode

        let source: any PacketSource
        var xdpStatistics: (@Sendable () throws -> XDPStatistics?)?
        var kernelScanStatistics: (@Sendable () throws -> KernelScanStatistics?)?
        let enforcement = settings.source == .xdp && settings.block == .xdp && settings.kernelEnforcement
            ? KernelEnforcement(rule: settings.pipelineConfiguration.scanRule, policy: settings.blockPolicy) : nil
        if settings.source == .xdp, settings.block == .xdp, settings.kernelEnforcement, enforcement == nil {
            logger.notice(
                "the scan rule runs in user space only: the XDP program holds at most \(KernelEnforcement.maxPortThreshold) ports"
            )
        }
        switch settings.source {
        case .pcap:
            let pcap = PcapLiveSource(
                configuration: .init(interface: interface, destinations: destinations),
                logger: logger
            )
            try pcap.open()
            source = pcap
        case .xdp:
            let xdp = XDPSource(
                configuration: .init(
                    interface: interface, mode: mode, pinRoot: settings.pinDirectory, destinations: destinations,
                    enforcement: enforcement
                ),
                logger: logger
            )
            try xdp.attach()
            xdpStatistics = { try xdp.statistics() }
            if enforcement != nil { kernelScanStatistics = { try xdp.scanStatistics() } }
            source = xdp
        }

        let blocker: (any Blocker)?
        switch settings.block {
        case .none:
            blocker = nil
        case .xdp:
            let xdpBlocker = try XDPBlocker(pinRoot: settings.pinDirectory, ipv6UnitLength: settings.ipv6BlockPrefix)
            try xdpBlocker.replaceAllowlist(allowlist)
            if settings.source != .xdp {
                // Blocking in XDP needs the program on the interface even when libpcap captures.
                let attached = try xdpBlocker.enforce(on: interface, mode: mode)
                logger.info(
                    "XDP program attached for blocking", metadata: ["interface": "\(interface)", "mode": "\(attached)"]
                )
                cleanups.append { xdpBlocker.stopEnforcing() }
            }
            if settings.flushOnExit {
                let maps = xdpBlocker.maps
                cleanups.append { _ = try? maps.flushBlocks() }
            }
            blocker = xdpBlocker
        case .nftables:
            let nftables = try NftablesBlocker()
            try nftables.createTable(allowing: allowlist)
            cleanups.append { try? nftables.removeTable() }
            blocker = nftables
        }
        if let blocker {
            logger.info(
                "blocking scanners", metadata: ["blocker": "\(blocker.name)", "allowlisted": "\(allowlist.entries.count)"]
            )
        }
        return PrivilegedParts(
            source: source, blocker: blocker, allowlist: allowlist, xdpStatistics: xdpStatistics,
            kernelScanStatistics: kernelScanStatistics, cleanups: cleanups
        )
    }
}
