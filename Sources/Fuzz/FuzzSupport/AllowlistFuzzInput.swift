/// A `FuzzAllowlist` input: text whose lines are each checked by ``AddressTextProperties``.
public enum AllowlistFuzzInput: Sendable {
    /// The violations of every line of `bytes` (split on `\n`; invalid UTF-8 is decoded with replacements).
    public static func violations(_ bytes: UnsafeRawBufferPointer) -> [String] {
        bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).flatMap { line in
            AddressTextProperties.violations(line: String(decoding: line, as: UTF8.self))
        }
    }
}
