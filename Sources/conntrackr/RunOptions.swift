import ArgumentParser
import ConnCore

/// The flags of `conntrackr run`: `--config`, then any setting of ``AgentSettings/all`` (a flag overrides the
/// file, which overrides the defaults).
struct RunOptions: ParsableArguments {
    @Option(help: "A YAML configuration file; its keys are the settings' names without dashes.")
    var config: String?

    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("Settings, as listed below.", valueName: "setting"))
    var settings: [String] = []

    /// The settings in force: defaults, then the configuration file, then the environment, then these flags.
    func resolve() throws -> AgentSettings {
        let (settings, positional) = try AgentSettings.resolve(arguments: settings, configurationFile: config)
        if let extra = positional.first { throw ValidationError("unexpected argument \(extra)") }
        return settings
    }
}
