/// A `FuzzAllowlist` input: an allow file, checked whole by ``AllowFileProperties``, whose lines are each checked
/// by ``AddressTextProperties``.
public enum AllowlistFuzzInput: Sendable {
    /// The violations of the file and of every line of it (split on `\n`; invalid UTF-8 is decoded with
    /// replacements).
    public static func violations(_ bytes: UnsafeRawBufferPointer) -> [String] {
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).flatMap { line in
            AddressTextProperties.violations(line: String(decoding: line, as: UTF8.self))
        }
        return lines + AllowFileProperties.violations(Array(bytes))
    }
}
