import ConnBlock
import ConnCore
import ConnTesting
import Foundation
import Synchronization

/// The path of a committed fixture file.
func fixturePath(_ name: String) -> String {
    guard let directory = Bundle.module.path(forResource: "Fixtures", ofType: nil) else {
        fatalError("the Fixtures resource directory is missing from the test bundle")
    }
    return directory + "/" + name
}

func fixtureBytes(_ name: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: fixturePath(name))))
}

/// Runs a command to completion for the lab helpers, failing loudly when it fails.
@discardableResult
func shell(_ arguments: [String], input: String = "", timeout: Duration = .seconds(10)) throws -> String {
    let result = try SpawnCommandRunner().run(arguments, input: Array(input.utf8), timeout: timeout)
    guard result.status == 0 else {
        throw LabError(
            "\(arguments.joined(separator: " ")) exited with \(result.status): "
                + String(decoding: result.standardError, as: UTF8.self)
        )
    }
    return String(decoding: result.standardOutput, as: UTF8.self)
}

struct LabError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A suffix that keeps this run's namespaces, links and tables apart from any other run's.
func runSuffix() -> String {
    String(UInt32.random(in: 0...UInt32.max), radix: 16)
}
