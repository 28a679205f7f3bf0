public import ConnCore

/// One change to one element of an exact-match set of conntrackr's table, as ``NftablesCommands/apply(_:table:)``
/// writes it over netlink: typed, so that nothing is parsed on the way to the kernel.
public struct NftablesElementChange: Hashable, Sendable {
    /// What the change does.
    public enum Kind: Hashable, Sendable {
        /// Adds the element; the kernel refuses the transaction (`EEXIST`) when the set holds the key already.
        case create
        /// Adds the element; an element the set holds already is left as it is.
        case add
        /// Deletes the element; the kernel refuses the transaction (`ENOENT`) when the set does not hold the key.
        case delete
    }

    /// An element: its key, and for additions its timeout and comment.
    public struct Element: Hashable, Sendable {
        /// The key: an address of the set's type.
        public var key: IPAddress
        /// The kernel timeout (whole milliseconds, rounded up); `nil`: the element stays until deleted.
        public var timeout: Duration?
        /// The comment nft lists with the element (at most 128 bytes); `nil`: none.
        public var comment: String?

        public init(key: IPAddress, timeout: Duration? = nil, comment: String? = nil) {
            self.key = key
            self.timeout = timeout
            self.comment = comment
        }
    }

    public var kind: Kind
    /// The set's name.
    public var set: String
    public var element: Element

    public init(_ kind: Kind, set: String, element: Element) {
        self.kind = kind
        self.set = set
        self.element = element
    }

    /// Adds `element`, refused when the key exists.
    public static func create(set: String, element: Element) -> Self { Self(.create, set: set, element: element) }

    /// Makes sure `key` exists (an element without timeout or comment when it did not).
    public static func add(set: String, key: IPAddress) -> Self { Self(.add, set: set, element: Element(key: key)) }

    /// Deletes `key`, refused when it does not exist.
    public static func delete(set: String, key: IPAddress) -> Self {
        Self(.delete, set: set, element: Element(key: key))
    }
}

/// What the kernel said to one transaction of ``NftablesElementChange``s.
public enum NftablesChangeOutcome: Hashable, Sendable {
    /// All the changes are in force.
    case applied
    /// None of them is: the kernel refused the change at `change` (an index into the list; `nil` when it refused the
    /// transaction as a whole) with the error number `errno` (`EEXIST`, `ENOENT`, `EPERM`...).
    case refused(errno: Int32, change: Int?)
}
