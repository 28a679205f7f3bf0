public import ConnCore

/// 2021-04-28 15:28:11 UTC, the brief's example time: a fixed clock for tests.
public let referenceTime = Timestamp(seconds: 1_619_623_691)

/// The address `text` names. A typo traps: in a test it is a bug of the test.
public func address(_ text: String) -> IPAddress {
    guard let address = IPAddress(text) else { fatalError("bad test address \(text)") }
    return address
}

/// The address or CIDR prefix `text` names. A typo traps: in a test it is a bug of the test.
public func prefix(_ text: String) -> IPPrefix {
    guard let prefix = IPPrefix(text) else { fatalError("bad test prefix \(text)") }
    return prefix
}
