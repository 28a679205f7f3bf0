import ConnCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One element of an nftables set, as `nft -j list` shows it.
struct NftablesElement: Hashable, Sendable {
    var prefix: IPPrefix
    /// The element's timeout in whole seconds; `nil` for an element without one.
    var timeoutSeconds: Int64?
    /// Seconds left before the kernel drops the element (rounded down by nft).
    var expiresInSeconds: Int64?
    var comment: String?
    /// Packets matched, when the set keeps per-element counters.
    var packets: UInt64
}

/// Reads the elements of sets out of `nft -j list ...` output (nftables JSON schema version 1).
enum NftablesListing {
    /// The elements of each set whose name `sets` accepts, found anywhere in the listing. Element values that are
    /// not an address or a CIDR (a range that is not a prefix) are skipped; a bare address is a host prefix.
    static func elements(
        in json: [UInt8], sets: (String) -> Bool
    ) throws(ConntrackrError) -> [String: [NftablesElement]] {
        let document: JSONValue
        do {
            document = try JSONDecoder().decode(JSONValue.self, from: Data(json))
        } catch {
            throw ConntrackrError(.blockerFailed, "nft printed a listing that is not JSON")
        }
        guard case .array(let objects)? = document["nftables"] else {
            throw ConntrackrError(.blockerFailed, "nft printed JSON without an \"nftables\" array")
        }
        var result: [String: [NftablesElement]] = [:]
        for object in objects {
            guard let set = object["set"], case .string(let name)? = set["name"], sets(name) else {
                continue
            }
            var elements: [NftablesElement] = []
            if case .array(let items)? = set["elem"] {
                for item in items {
                    if let element = element(item) { elements.append(element) }
                }
            }
            result[name] = elements
        }
        return result
    }

    /// An element is a bare value (`"198.51.100.5"`, `{"prefix": ...}`) or, when it carries a timeout, counter
    /// or comment, `{"elem": {"val": ..., "timeout": ..., ...}}`.
    private static func element(_ item: JSONValue) -> NftablesElement? {
        guard let wrapped = item["elem"] else {
            return prefix(item).map { NftablesElement(prefix: $0, packets: 0) }
        }
        guard let value = wrapped["val"], let prefix = prefix(value) else { return nil }
        var packets: UInt64 = 0
        if let counted = wrapped["counter"]?["packets"]?.integer, counted >= 0 { packets = UInt64(counted) }
        var comment: String?
        if case .string(let text)? = wrapped["comment"] { comment = text }
        return NftablesElement(
            prefix: prefix,
            timeoutSeconds: wrapped["timeout"]?.integer,
            expiresInSeconds: wrapped["expires"]?.integer,
            comment: comment,
            packets: packets
        )
    }

    private static func prefix(_ value: JSONValue) -> IPPrefix? {
        switch value {
        case .string(let text):
            return IPAddress(text).map { IPPrefix(host: $0) }
        case .object(let fields):
            guard let prefix = fields["prefix"], case .string(let text)? = prefix["addr"],
                let length = prefix["len"]?.integer, let address = IPAddress(text), length >= 0, length <= 128
            else { return nil }
            return IPPrefix(address: address, length: Int(length))
        default:
            return nil
        }
    }
}

/// Any JSON value, for reading documents whose shape varies (nftables elements are strings or objects).
enum JSONValue: Decodable, Hashable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// The member `key` of an object; `nil` for anything else.
    subscript(key: String) -> JSONValue? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    /// An integral number; `nil` for anything else.
    var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .number(let value) where value.rounded() == value && abs(value) < 9e18: Int64(value)
        default: nil
        }
    }
}
