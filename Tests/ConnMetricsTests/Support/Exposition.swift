/// A Prometheus text exposition read back, strictly enough to catch malformed output: every sample must follow a
/// TYPE line of its family, and no family may have two HELP or TYPE lines.
struct Exposition {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Malformed: Error, CustomStringConvertible {
        var line: String
        var why: String
        var description: String { "\(why): \(line)" }
    }

    private(set) var help: [String: String] = [:]
    private(set) var types: [String: String] = [:]
    private(set) var samples: [Sample] = []

    init(_ text: String) throws {
        guard text.isEmpty || text.hasSuffix("\n") else { throw Malformed(line: "", why: "no final line feed") }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) {
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst(7)
                guard let space = rest.firstIndex(of: " ") else {
                    throw Malformed(line: line, why: "HELP without text")
                }
                let name = String(rest[..<space])
                guard help[name] == nil else { throw Malformed(line: line, why: "second HELP") }
                help[name] = String(rest[rest.index(after: space)...])
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                guard parts.count == 2 else { throw Malformed(line: line, why: "bad TYPE") }
                guard types[String(parts[0])] == nil else { throw Malformed(line: line, why: "second TYPE") }
                types[String(parts[0])] = String(parts[1])
            } else if line.hasPrefix("#") {
                continue
            } else {
                let sample = try Self.parseSample(line)
                guard types[sample.name] != nil else { throw Malformed(line: line, why: "sample before its TYPE") }
                samples.append(sample)
            }
        }
    }

    /// The value of the one sample with this name and exactly these labels.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples.filter { $0.name == name && $0.labels == labels }
        return matching.count == 1 ? matching[0].value : nil
    }

    /// Every sample of a family.
    func series(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    private static func parseSample(_ line: String) throws -> Sample {
        var rest = Substring(line)
        let nameEnd = rest.firstIndex { $0 == "{" || $0 == " " } ?? rest.endIndex
        let name = String(rest[..<nameEnd])
        rest = rest[nameEnd...]
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                guard let equals = rest.firstIndex(of: "=") else { throw Malformed(line: line, why: "label without =") }
                let key = String(rest[..<equals])
                rest = rest[rest.index(after: equals)...]
                guard rest.first == "\"" else { throw Malformed(line: line, why: "unquoted label value") }
                rest = rest.dropFirst()
                var value = ""
                while let character = rest.first, character != "\"" {
                    rest = rest.dropFirst()
                    if character == "\\" {
                        guard let escaped = rest.popFirst() else { throw Malformed(line: line, why: "bad escape") }
                        switch escaped {
                        case "n": value.append("\n")
                        case "\\", "\"": value.append(escaped)
                        default: throw Malformed(line: line, why: "bad escape")
                        }
                    } else {
                        value.append(character)
                    }
                }
                guard rest.popFirst() == "\"" else { throw Malformed(line: line, why: "unterminated label value") }
                labels[key] = value
                if rest.first == "," { rest = rest.dropFirst() }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " ", let value = Double(rest.dropFirst()) else {
            throw Malformed(line: line, why: "bad value")
        }
        return Sample(name: name, labels: labels, value: value)
    }
}
