/// A set of settings with their defaults: the type a table of ``Setting``s fills in.
public protocol SettingsRoot: Sendable {
    /// The defaults.
    init()
}

/// How a setting is written on the command line.
public enum SettingShape: Sendable {
    /// `--name VALUE` (or `--name=VALUE`); `placeholder` names the value in the help.
    case value(placeholder: String)
    /// `--name` or `--no-name`.
    case toggle
    /// `--name VALUE`, repeatable; the flags together replace the file's list.
    case list(placeholder: String)
}

/// A value before it is parsed: a flag's text or a configuration file's YAML value.
public enum SettingInput {
    case flag(String)
    case file(Any)
}

/// Holds YAML values of any type; parsed where it was read.
@available(*, unavailable)
extension SettingInput: Sendable {}

/// Why an input is not a value of a setting: what it expects (`a whole number`), or a whole message of the type
/// that parsed it.
public enum SettingProblem: Error {
    case expected(String)
    case message(String)
}

/// One setting, declared once: its name is both the flag (`--block-ttl`) and the configuration file's key
/// (`block-ttl:`); its help, its default (read from `Root()`, whose defaults should come from the library types
/// that use them), its parsing and its range check live here. Flags, the file and the help text all derive from
/// it (see ``SettingsTable``).
public struct Setting<Root: SettingsRoot>: Sendable {
    public typealias Input = SettingInput
    public typealias Problem = SettingProblem

    public let name: String
    public let shape: SettingShape
    public let help: String
    /// Another source of the value between the file and the flags (a secret kept out of `ps`).
    public let environment: String?
    /// Parses `input` into `settings`.
    let apply: @Sendable (inout Root, Input) throws(Problem) -> Void
    /// The value as the help shows it, `nil` for none.
    let describe: @Sendable (Root) -> String?
    /// What is wrong with the value in `settings`, `nil` when it is in range.
    let check: @Sendable (Root) -> String?

    /// The help for this setting, with its default: the flag on one line, its text below, wrapped to fit an
    /// 80-column terminal (the argument parser does not indent what it wraps).
    public var helpLines: String {
        let flag =
            switch shape {
            case .value(let placeholder): "--\(name) <\(placeholder)>"
            case .toggle: "--[no-]\(name)"
            case .list(let placeholder): "--\(name) <\(placeholder)> ..."
            }
        let value = describe(Root()).map { " (default: \($0))" } ?? ""
        let text = help + value + (environment.map { " Also from $\($0)." } ?? "")
        var lines = ["  " + flag]
        var line = "       "
        for word in text.split(separator: " ") {
            if line.count + word.count > 78 {
                lines.append(line)
                line = "       "
            }
            line += " " + word
        }
        lines.append(line)
        return lines.joined(separator: "\n")
    }
}

// MARK: Kinds of setting

extension Setting {
    public typealias Path<Value> = any WritableKeyPath<Root, Value> & Sendable

    /// A setting whose value `parse` reads from text or YAML.
    public static func value<Value>(
        _ name: String,
        _ path: Path<Value>,
        placeholder: String,
        help: String,
        environment: String? = nil,
        parse: @escaping @Sendable (Input) throws(Problem) -> Value,
        describe: @escaping @Sendable (Value) -> String? = { "\($0)" },
        check: @escaping @Sendable (Value) -> String? = { _ in nil }
    ) -> Setting {
        Setting(
            name: name,
            shape: .value(placeholder: placeholder),
            help: help,
            environment: environment,
            apply: { (settings: inout Root, input: Input) throws(Problem) in
                settings[keyPath: path] = try parse(input)
            },
            describe: { describe($0[keyPath: path]) },
            check: { check($0[keyPath: path]) }
        )
    }

    /// Free text, `nil` until set.
    public static func text(
        _ name: String, _ path: Path<String?>, placeholder: String, help: String, environment: String? = nil
    ) -> Setting {
        value(
            name, path, placeholder: placeholder, help: help, environment: environment,
            parse: { (input: Input) throws(Problem) in try Parse.text(input) }, describe: { $0 }
        )
    }

    /// A whole number within `range`; `range.check` words the complaint.
    public static func integer(_ name: String, _ path: Path<Int>, help: String, range: ClosedRange<Int>, outOfRange: String)
        -> Setting
    {
        value(
            name, path, placeholder: "n", help: help, parse: { (input: Input) throws(Problem) in try Parse.integer(input) },
            check: { range.contains($0) ? nil : outOfRange }
        )
    }

    /// A number of seconds, accepted where `valid` holds.
    public static func seconds(_ name: String, _ path: Path<Double>, help: String, valid: @escaping @Sendable (Double) -> Bool, invalid: String)
        -> Setting
    {
        value(
            name, path, placeholder: "seconds", help: help,
            parse: { (input: Input) throws(Problem) in try Parse.number(input) },
            describe: { $0 == $0.rounded() ? String(Int($0)) : "\($0)" },
            check: { valid($0) ? nil : invalid }
        )
    }

    /// One of the cases of `Value`.
    public static func choice<Value: RawRepresentable & CaseIterable & Sendable>(_ name: String, _ path: Path<Value>, help: String)
        -> Setting where Value.RawValue == String
    {
        value(
            name, path, placeholder: Value.allCases.map(\.rawValue).joined(separator: "|"), help: help,
            parse: { (input: Input) throws(Problem) in try Parse.choice(input) }, describe: { $0.rawValue }
        )
    }

    /// On or off.
    public static func toggle(_ name: String, _ path: Path<Bool>, help: String) -> Setting {
        Setting(
            name: name, shape: .toggle, help: help, environment: nil,
            apply: { (settings: inout Root, input: Input) throws(Problem) in
                settings[keyPath: path] = try Parse.boolean(input)
            },
            describe: { $0[keyPath: path] ? "on" : "off" },
            check: { _ in nil }
        )
    }

    /// A list of text; `splitCommas` also splits each item at commas.
    public static func list(
        _ name: String, _ path: Path<[String]>, placeholder: String, help: String, splitCommas: Bool = false,
        check: @escaping @Sendable ([String]) -> String? = { _ in nil }
    ) -> Setting {
        Setting(
            name: name, shape: .list(placeholder: placeholder), help: help, environment: nil,
            apply: { (settings: inout Root, input: Input) throws(Problem) in
                let items = try Parse.list(input)
                settings[keyPath: path] =
                    splitCommas
                    ? items.flatMap { $0.split(separator: ",") }.map { String($0.filter { !$0.isWhitespace }) }
                        .filter { !$0.isEmpty }
                    : items
            },
            describe: { $0[keyPath: path].isEmpty ? nil : $0[keyPath: path].joined(separator: ",") },
            check: { check($0[keyPath: path]) }
        )
    }

    /// A list read as a whole into one typed value (a set of ports, of event kinds): `--name A --name B,C` or
    /// `name: [A, B]`. Items are split at commas and trimmed; YAML items may be strings or whole numbers.
    public static func items<Value>(
        _ name: String, _ path: Path<Value>, placeholder: String, help: String,
        parse: @escaping @Sendable ([String]) throws(Problem) -> Value,
        describe: @escaping @Sendable (Value) -> String?
    ) -> Setting {
        Setting(
            name: name, shape: .list(placeholder: placeholder), help: help, environment: nil,
            apply: { (settings: inout Root, input: Input) throws(Problem) in
                let items = try Parse.items(input)
                    .flatMap { $0.split(separator: ",") }
                    .map { String($0.filter { !$0.isWhitespace }) }
                    .filter { !$0.isEmpty }
                settings[keyPath: path] = try parse(items)
            },
            describe: { describe($0[keyPath: path]) },
            check: { _ in nil }
        )
    }
}

/// Reading values from flags' text and the file's YAML.
public enum Parse: Sendable {
    public static func text(_ input: SettingInput) throws(SettingProblem) -> String {
        switch input {
        case .flag(let text): return text
        case .file(let value):
            if let text = value as? String { return text }
            if let number = value as? Int { return String(number) }
            throw .expected("a string")
        }
    }

    public static func integer(_ input: SettingInput) throws(SettingProblem) -> Int {
        switch input {
        case .flag(let text): if let number = Int(text) { return number }
        case .file(let value): if let number = value as? Int { return number }
        }
        throw .expected("a whole number")
    }

    public static func number(_ input: SettingInput) throws(SettingProblem) -> Double {
        switch input {
        case .flag(let text): if let number = Double(text), number.isFinite { return number }
        case .file(let value):
            if let number = value as? Double, number.isFinite { return number }
            if let number = value as? Int { return Double(number) }
        }
        throw .expected("a number")
    }

    public static func boolean(_ input: SettingInput) throws(SettingProblem) -> Bool {
        switch input {
        case .flag(let text): if let flag = Bool(text) { return flag }
        case .file(let value): if let flag = value as? Bool { return flag }
        }
        throw .expected("true or false")
    }

    public static func list(_ input: SettingInput) throws(SettingProblem) -> [String] {
        switch input {
        case .flag(let text): return [text]
        case .file(let value):
            if let text = value as? String { return [text] }
            guard let items = value as? [Any] else { throw .expected("a list") }
            var texts: [String] = []
            for item in items {
                guard let text = item as? String else { throw .expected("a list of strings") }
                texts.append(text)
            }
            return texts
        }
    }

    /// A list whose items are strings or whole numbers (`[25, "8000-8100"]`), as text.
    public static func items(_ input: SettingInput) throws(SettingProblem) -> [String] {
        switch input {
        case .flag(let text): return [text]
        case .file(let value):
            if let text = value as? String { return [text] }
            if let number = value as? Int { return [String(number)] }
            guard let items = value as? [Any] else { throw .expected("a list") }
            var texts: [String] = []
            for item in items {
                if let text = item as? String {
                    texts.append(text)
                } else if let number = item as? Int {
                    texts.append(String(number))
                } else {
                    throw .expected("a list of strings or numbers")
                }
            }
            return texts
        }
    }

    public static func choice<Value: RawRepresentable & CaseIterable>(_ input: SettingInput) throws(SettingProblem) -> Value
    where Value.RawValue == String {
        guard let chosen = Value(rawValue: try text(input)) else {
            throw .expected("one of " + Value.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return chosen
    }
}

