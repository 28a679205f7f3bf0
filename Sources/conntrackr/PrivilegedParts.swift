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
        if settings.destinationUnit == .host, settings.allDestinations {
            throw ConntrackrError(
                .invalidConfiguration, "--destination-unit host counts this host's addresses as one: not with --all-destinations")
        }
        guard let interface = try settings.interface ?? DefaultRoutes.preferredInterface(DefaultRoutes.read()) else {
            throw ConntrackrError(.noSuchInterface, "no default route to pick an interface from: pass --interface")
        }
        var cleanups: [@Sendable () -> Void] = []
        let allowlist = try HostAllowlist(settings: settings).build()
        let destinations = settings.allDestinations ? nil : try HostAddresses.current()
        let mode = settings.xdpMode
        if settings.source == .xdp || settings.block == .xdp {
            // A fresh machine (no systemd, a minimal container) has no bpffs: mount it as systemd would.
            if case .mounted(let mountPoint) = try BPFFileSystem.ensureMounted(forPinRoot: settings.pinDirectory) {
                logger.notice(
                    "mounted bpffs for the pinned maps",
                    metadata: ["mount_point": "\(mountPoint)", "pin_dir": "\(settings.pinDirectory)"]
                )
            }
        }

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
            try StartUpFix.pcap(interface: interface) { try pcap.open() }
            source = pcap
        case .xdp:
            let xdp = XDPSource(
                configuration: .init(
                    interface: interface, mode: mode, pinRoot: settings.pinDirectory, destinations: destinations,
                    enforcement: enforcement
                ),
                logger: logger
            )
            _ = try StartUpFix.xdp(interface: interface) { try xdp.attach() }
            xdpStatistics = { try xdp.statistics() }
            if enforcement != nil { kernelScanStatistics = { try xdp.scanStatistics() } }
            source = xdp
        }

        let blocker: (any Blocker)?
        switch settings.block {
        case .none:
            blocker = nil
        case .xdp:
            let xdpBlocker = try StartUpFix.xdp(interface: interface) {
                try XDPBlocker(pinRoot: settings.pinDirectory, ipv6UnitLength: settings.ipv6BlockPrefix)
            }
            try xdpBlocker.replaceAllowlist(allowlist)
            if settings.source != .xdp {
                // Blocking in XDP needs the program on the interface even when libpcap captures.
                let attached = try StartUpFix.xdp(interface: interface) { try xdpBlocker.enforce(on: interface, mode: mode) }
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
            var scanGuard: NftablesScanGuard?
            if settings.kernelEnforcement {
                scanGuard = NftablesScanGuard(
                    rule: settings.pipelineConfiguration.scanRule, interface: interface,
                    localDestinationsOnly: !settings.allDestinations,
                    maxBlocksPerMinute: settings.blockPolicy.maxBlocksPerMinute
                )
                if scanGuard == nil {
                    logger.warning(
                        "the scan rule runs in user space only: nftables holds thresholds of 1 to \(NftablesScanGuard.maxPortThreshold), windows of a second or more, a block budget of 1 or more and plain interface names"
                    )
                }
            }
            let nftables = try StartUpFix.nftables {
                try NftablesBlocker.withTable(
                    allowing: allowlist, ipv6UnitLength: settings.ipv6BlockPrefix, scanGuard: scanGuard, logger: logger
                )
            }
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

extension NftablesBlocker {
    /// A blocker with its table made, with `scanGuard` when the kernel takes it: an older kernel may lack what the
    /// guard uses (the fib expression, sets updated from a rule), and blocking without it beats not blocking.
    static func withTable(
        allowing allowlist: Allowlist, ipv6UnitLength: Int, scanGuard: NftablesScanGuard?, logger: Logger
    ) throws(ConntrackrError) -> NftablesBlocker {
        let guarded = try NftablesBlocker(.init(ipv6UnitLength: ipv6UnitLength, scanGuard: scanGuard))
        do {
            try guarded.createTable(allowing: allowlist)
            if let scanGuard {
                logger.info(
                    "the nftables table holds scanners to the threshold until their block lands",
                    metadata: ["table": "inet conntrackr_guard", "interface": "\(scanGuard.interface)"]
                )
            }
            return guarded
        } catch where scanGuard != nil && error.code == .blockerFailed {
            logger.warning(
                "the scan rule runs in user space only: nftables refused the scan guard",
                metadata: ["error": "\(error.message)"]
            )
        }
        let plain = try NftablesBlocker(.init(ipv6UnitLength: ipv6UnitLength))
        try plain.createTable(allowing: allowlist)
        return plain
    }
}

/// Start-up failures end with what to do about them. The parts' own messages say what failed (and, for a missing
/// privilege or a missing tool, the fix already); these add the fix where a message of that kind has none.
enum StartUpFix {
    static let interfaces = "pick one of `ip -br link` with --interface"
    static let otherModes = "use --source pcap with --block nftables where XDP cannot run"

    /// pcap capture: the interface, or the capture itself.
    static func pcap<T>(interface: String, _ body: () throws -> T) throws -> T {
        try adding(body) { error in
            switch error.code {
            case .noSuchInterface: interfaces
            case .captureFailed: "check `ip link show \(interface)` (it must exist and be up), or \(interfaces)"
            default: nil
            }
        }
    }

    /// Loading or attaching the XDP program, or opening its pinned maps.
    static func xdp<T>(interface: String, _ body: () throws -> T) throws -> T {
        try adding(body) { error in
            switch error.code {
            case .noSuchInterface: interfaces
            case .alreadyRunning: "stop the other agent, or detach it with `ip link set dev \(interface) xdp off`"
            case .kernelUnsupported: otherModes
            case .bpfFailed where error.message.hasPrefix("cannot attach"): "try --xdp-mode generic, or \(otherModes)"
            case .bpfFailed: "CONNTRACKR_LIBBPF_DEBUG=1 shows libbpf's log; or \(otherModes)"
            default: nil
            }
        }
    }

    /// Creating conntrackr's nftables table.
    static func nftables<T>(_ body: () throws -> T) throws -> T {
        try adding(body) { error in
            error.code == .blockerFailed && !error.message.contains("install the nftables package")
                ? "check that `nft list ruleset` works on this host, or use --block xdp" : nil
        }
    }

    private static func adding<T>(_ body: () throws -> T, fix: (ConntrackrError) -> String?) throws -> T {
        do {
            return try body()
        } catch var error as ConntrackrError {
            // A message that names a command to run, a flag to change or a directory to remove has its fix already.
            let fixed = ["`", "--", "run as root", "to start afresh", "install the"].contains { error.message.contains($0) }
            if !fixed, let text = fix(error) {
                error.message += ": " + text
            }
            throw error
        }
    }
}
