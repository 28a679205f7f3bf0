/// An error a user can act on: a code to match on and one line saying what went wrong and where.
public struct ConntrackrError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unreadableCapture, unsupportedLinkType, truncatedCapture, captureFailed
            case noSuchInterface, missingPrivilege, kernelUnsupported, bpfFailed, blockerFailed
            case invalidConfiguration, alreadyRunning
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A capture file that is missing, unreadable or not a capture.
        public static let unreadableCapture = Code(.unreadableCapture)
        /// A link-layer type the parser does not know.
        public static let unsupportedLinkType = Code(.unsupportedLinkType)
        /// A capture file that ends in the middle of a record.
        public static let truncatedCapture = Code(.truncatedCapture)
        /// Live capture could not start or stopped with an error.
        public static let captureFailed = Code(.captureFailed)
        public static let noSuchInterface = Code(.noSuchInterface)
        /// The process lacks a capability the mode needs.
        public static let missingPrivilege = Code(.missingPrivilege)
        /// The kernel lacks a feature the mode needs (bpffs, XDP, ring buffers).
        public static let kernelUnsupported = Code(.kernelUnsupported)
        /// Loading, attaching or talking to the BPF program failed.
        public static let bpfFailed = Code(.bpfFailed)
        /// A blocker could not apply or remove a block.
        public static let blockerFailed = Code(.blockerFailed)
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// Another agent already watches the interface.
        public static let alreadyRunning = Code(.alreadyRunning)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// One line for the user, naming the file, interface or setting involved.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
