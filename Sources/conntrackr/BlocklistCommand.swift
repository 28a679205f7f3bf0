import ArgumentParser
import ConnCore
import ConnSettings
import ConnFleet
import ConnXDP
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
        var pinDir = XDPProgram.defaultPinRoot

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
                var formatter = BlocklistFormatter(format: format)
                for entry in entries { print(formatter.line(for: entry)) }
                if let summary = formatter.summary(of: entries) { print(summary) }
            } catch {
                exitWithFailure(error)
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
            guard ttl >= 0, ttl.isFinite else { throw ValidationError("--ttl must be 0 (permanent) or more seconds") }
        }

        func run() {
            let maps = pins.open()
            let target = IPPrefix(prefix)!
            do {
                // The kernel lets allowlisted sources through anyway; say so instead of pretending to block them.
                if let allowed = try maps.allowedPrefix(overlapping: target) {
                    exitWithFailure(
                        ConntrackrError(.invalidConfiguration, "\(target) overlaps the allowlisted \(allowed): not blocked")
                    )
                }
                let now = Timestamp.now()
                let expires = ttl == 0 ? nil : now + .nanoseconds(Int64(min(ttl * 1e9, 9.2e18)))
                let entry = BlockEntry(prefix: target, reason: .manual, since: now, expires: expires)
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

                """ + AgentSettings.fleetOnly.helpText
        )
        @OptionGroup var pins: PinOptions
        @Option(help: ArgumentHelp("The agent's configuration file, for its fleet-* settings.", valueName: "file"))
        var config: String?
        @Argument(
            parsing: .allUnrecognized,
            help: ArgumentHelp("The blocked address or CIDR prefix, and fleet settings.", valueName: "prefix")
        )
        var arguments: [String] = []

        func run() throws {
            let blocked: IPPrefix
            let fleet: FleetConfiguration?
            do {
                let resolved = try AgentSettings.resolve(
                    arguments: arguments, configurationFile: config, table: AgentSettings.fleetOnly
                )
                guard resolved.positional.count == 1, let prefix = IPPrefix(resolved.positional[0]) else {
                    throw ValidationError("give exactly one address or CIDR prefix to unblock")
                }
                (blocked, fleet) = (prefix, resolved.0.fleet)
            } catch let error as ValidationError {
                throw error
            } catch {
                exitWithFailure(error)
            }
            if let fleet {
                let key = Mutex<[String]>([])
                let failure = runAsync {
                    do {
                        let deleted = try await FleetUnblock.remove(blocked, configuration: fleet)
                        key.withLock { $0 = deleted }
                        return nil
                    } catch {
                        return error
                    }
                }
                if let failure { exitWithFailure(failure) }
                let deleted = key.withLock { $0 }.joined(separator: ", ")
                print("unblocked \(blocked) across the fleet: deleted \(deleted); each running agent lifts its copy")
                return
            }
            let maps = pins.open()
            do {
                guard try maps.unblock(blocked) else {
                    exitWithFailure(ConntrackrError(.invalidConfiguration, "\(blocked) is not blocked"))
                }
                print("unblocked \(blocked)")
            } catch {
                exitWithFailure(error)
            }
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
