import CPcap
import ConnCore

#if canImport(Glibc)
import Glibc  // timeval's members (MemberImportVisibility)
#endif

/// Owns a `pcap_t` and closes it. Used by one thread at a time, except ``breakLoop()`` which libpcap allows from
/// another thread.
final class PcapHandle: @unchecked Sendable {
    // @unchecked: the handle is driven by the capture thread only; `pcap_breakloop` is the documented exception.
    let raw: OpaquePointer
    /// Frees what libpcap uses until it is closed (a capture file's stdio buffer, its gzip layer).
    private let afterClose: (() -> Void)?

    init(_ raw: OpaquePointer, afterClose: (() -> Void)? = nil) {
        self.raw = raw
        self.afterClose = afterClose
    }

    deinit {
        pcap_close(raw)
        afterClose?()
    }

    /// libpcap's last error text for this handle.
    var lastError: String { String(cString: pcap_geterr(raw)) }

    /// The link type of the frames, or an error naming the unsupported type.
    func linkType(describing origin: String) throws -> LinkType {
        let value = pcap_datalink(raw)
        guard let linkType = LinkType(rawValue: value) else {
            let name = pcap_datalink_val_to_name(value).map { String(cString: $0) } ?? "unknown"
            throw ConntrackrError(.unsupportedLinkType, "\(origin): link type \(value) (\(name)) is not supported")
        }
        return linkType
    }

    func breakLoop() { pcap_breakloop(raw) }
}

/// Timestamps from a `pcap_pkthdr` whose `ts.tv_usec` holds nanoseconds (the handle was opened with nanosecond
/// precision), clamped into ``Timestamp/recordTimeRange``: a capture file can make libpcap report any `tv_sec`
/// (pcapng's `if_tsoffset` is added unchecked, and a 64-bit timestamp over a coarse resolution is huge), and a
/// record time must never trap or wrap into a time that does.
@inline(__always)
func nanosecondTimestamp(_ header: UnsafePointer<pcap_pkthdr>) -> Timestamp {
    Timestamp(
        clampingSeconds: Int64(header.pointee.ts.tv_sec),
        nanosecondsPastSecond: Int64(header.pointee.ts.tv_usec)
    )
}
