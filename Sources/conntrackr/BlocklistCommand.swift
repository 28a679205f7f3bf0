import ArgumentParser
import ConnBlock
import ConnCore
import ConnFleet
import Logging
import Synchronization

/// `conntrackr blocklist`: reads and edits the pinned XDP blocklist, while the agent runs or not.
struct BlocklistCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blocklist",
        abstract: "Show or edit the pinned XDP blocklist (needs CAP_BPF, or root).",
        subcommands: [List.self, Add.self, Remove.self, Flush.self],
        defaultSubcommand: List.self
    )

    struct PinOptions: ParsableArguments {
        @Option(help: "The bpffs directory of conntrackr's pinned maps.")
        var pinDir = PinnedBlockMaps.defaultPinRoot

        func open() -> PinnedBlockMaps {
            do {
                return try PinnedBlockMaps(pinRoot: pinDir, createIfMissing: false)
            } catch {
                exitWithFailure(error)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List blocked prefixes with their drop counters.")
        @OptionGroup var pins: PinOptions
        @Option(help: "Output format: text or json.") var format: OutputFormat = .text

        func run() {
            let maps = pins.open()
            do {
                let entries = try maps.blockEntries().sorted { $0.prefix.address < $1.prefix.address }
                var clock = TimeFormatter()
                for entry in entries { print(Self.line(entry, format: format, clock: &clock)) }
                if format == .text {
                    let total = entries.reduce(UInt64(0)) { $0 + $1.droppedPackets }
                    print("\(entries.count) blocked, \(total) packets dropped")
                }
            } catch {
                exitWithFailure(error)
            }
        }

        static func line(_ entry: BlockEntry, format: OutputFormat, clock: inout TimeFormatter) -> String {
            func text(_ time: Timestamp, local: Bool) -> String {
                var bytes: [UInt8] = []
                if local { clock.appendLocal(time, to: &bytes) } else { clock.appendRFC3339(time, to: &bytes) }
                return String(decoding: bytes, as: UTF8.self)
            }
            switch format {
            case .text:
                let until = entry.expires.map { "until " + text($0, local: true) } ?? "permanent"
                return "\(entry.prefix)  \(entry.reason.rawValue)  \(entry.origin.rawValue)  \(until)  "
                    + "\(entry.droppedPackets) packets dropped"
            case .json:
                let expires = entry.expires.map { "\"\(text($0, local: false))\"" } ?? "null"
                return #"{"src":"\#(entry.prefix)","reason":"\#(entry.reason.rawValue)","origin":"\#(entry.origin.rawValue)","#
                    + #""since":"\#(text(entry.since, local: false))","expires":\#(expires),"dropped_packets":\#(entry.droppedPackets)}"#
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Block an address or CIDR prefix.")
        @OptionGroup var pins: PinOptions
        @Argument(help: "The address or CIDR prefix to block.") var prefix: String
        @Option(help: "Seconds until the block lapses; 0 blocks until removed.") var ttl: Double = 3600

        func validate() throws {
            guard IPPrefix(prefix) != nil else { throw ValidationError("\(prefix) is not an address or CIDR prefix") }
            guard ttl >= 0 else { throw ValidationError("--ttl must be 0 (permanent) or more seconds") }
        }

        func run() {
            let maps = pins.open()
            let target = IPPrefix(prefix)!
            do {
                // The kernel lets allowlisted sources through anyway; say so instead of pretending to block them.
                if let allowed = try maps.allowedPrefixes().first(where: {
                    $0.contains(target.address) || target.contains($0.address)
                }) {
                    exitWithFailure(
                        ConntrackrError(.invalidConfiguration, "\(target) overlaps the allowlisted \(allowed): not blocked")
                    )
                }
                let now = Timestamp.now()
                let entry = BlockEntry(
                    prefix: target, reason: .manual, since: now, expires: ttl == 0 ? nil : now + .nanoseconds(Int64(ttl * 1e9))
                )
                guard try maps.block(entry) else {
                    exitWithFailure(ConntrackrError(.blockerFailed, "the blocklist is full: \(target) not blocked"))
                }
                print("blocked \(target)" + (entry.expires == nil ? " permanently" : " for \(Int(ttl)) s"))
            } catch {
                exitWithFailure(error)
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Unblock exactly one prefix.",
            discussion: """
                With fleet settings (--fleet-etcd, or a --config file with fleet-etcd), the block is lifted across the \
                fleet instead: its etcd key is deleted, and every running agent, this host's included, lifts its copy.
                """
        )
        @OptionGroup var pins: PinOptions
        @Argument(help: "The blocked address or CIDR prefix.") var prefix: String
        @Option(help: ArgumentHelp("The agent's configuration file, for its fleet-* settings.", valueName: "file"))
        var config: String?
        @OptionGroup var fleet: FleetOptions

        func validate() throws {
            guard IPPrefix(prefix) != nil else { throw ValidationError("\(prefix) is not an address or CIDR prefix") }
        }

        func run() {
            let blocked = IPPrefix(prefix)!
            var settings = AgentSettings()
            do {
                if let config { try settings.load(configurationFile: config) }
                if let fleetConfiguration = try fleet.configuration(file: settings.fleetFile) {
                    try Self.removeFromFleet(blocked, configuration: fleetConfiguration)
                    return
                }
            } catch {
                exitWithFailure(error)
            }
            let maps = pins.open()
            do {
                guard try maps.unblock(IPPrefix(prefix)!) else {
                    exitWithFailure(ConntrackrError(.invalidConfiguration, "\(IPPrefix(prefix)!) is not blocked"))
                }
                print("unblocked \(IPPrefix(prefix)!)")
            } catch {
                exitWithFailure(error)
            }
        }

        /// Deletes the fleet key of `blocked`; the agents' watches do the rest.
        static func removeFromFleet(_ blocked: IPPrefix, configuration: FleetConfiguration) throws {
            let store = try EtcdStore(configuration: configuration.etcd, logger: Logger(label: "conntrackr.blocklist"))
            let key = FleetKeys(prefix: configuration.keyPrefix).key(for: blocked)
            let deleted = Mutex(false)
            let failure = runAsync {
                var outcome: (any Error)?
                do {
                    let found = try await store.delete(key: key)
                    deleted.withLock { $0 = found }
                } catch {
                    outcome = error
                }
                try? await store.shutdown()
                return outcome
            }
            if let failure { throw failure }
            guard deleted.withLock({ $0 }) else {
                throw ConntrackrError(.invalidConfiguration, "\(blocked) has no fleet record (\(key)); without fleet settings, remove removes it here")
            }
            print("unblocked \(blocked) across the fleet: deleted \(key); each running agent lifts its copy")
        }
    }

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Unblock everything.")
        @OptionGroup var pins: PinOptions

        func run() {
            let maps = pins.open()
            do {
                print("unblocked \(try maps.flushBlocks().count) prefixes")
            } catch {
                exitWithFailure(error)
            }
        }
    }
}
