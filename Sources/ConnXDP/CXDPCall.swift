import CXDP
import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// Calls a `ct_` function of the CXDP loader with a message buffer and turns a negative errno into a
/// ``ConntrackrError`` carrying the loader's one-line message.
/// - Parameter code: the error code for failures that are not a missing privilege, a missing bpffs, a missing
///   interface or an XDP program already attached (those have codes of their own).
/// - Returns: the function's non-negative result.
@discardableResult
func cxdpCall(
    failing code: ConntrackrError.Code = .bpfFailed,
    _ body: (UnsafeMutablePointer<CChar>, Int) -> Int32
) throws(ConntrackrError) -> Int32 {
    var failure: ConntrackrError?
    let result = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 512) { buffer -> Int32 in
        let base = buffer.baseAddress!
        base[0] = 0
        let result = body(base, buffer.count)
        if result < 0 {
            let text = base[0] != 0 ? String(cString: base) : String(cString: strerror(-result))
            failure = ConntrackrError(cxdpErrorCode(-result) ?? code, text)
        }
        return result
    }
    if let failure { throw failure }
    return result
}

/// The error code for an errno the loader returned (see `cxdp.h`), `nil` for one without a code of its own.
func cxdpErrorCode(_ errnoValue: Int32) -> ConntrackrError.Code? {
    switch errnoValue {
    case EPERM, EACCES: .missingPrivilege
    case ENOMEDIUM: .kernelUnsupported
    case ENODEV: .noSuchInterface
    case EBUSY: .alreadyRunning
    default: nil
    }
}

/// The 16 bytes of an event address (IPv6, or IPv4-mapped) as an ``IPAddress``, whose storage is the same form.
@inline(__always)
func ipAddress(
    _ bytes: (
        UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
        UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
    )
) -> IPAddress {
    withUnsafeBytes(of: bytes) { raw in
        IPAddress(
            high: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
            low: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        )
    }
}

/// Wall-clock nanoseconds minus CLOCK_BOOTTIME nanoseconds: add it to a kernel boot time to get a wall time.
///
/// The kernel stamps events with `bpf_ktime_get_boot_ns`, and the program compares block expiry times with the
/// same clock, because it neither jumps with clock changes nor stops during suspend; the offset moves only when
/// the wall clock is set.
public func bootToWallOffset() -> Int64 {
    var wall = timespec()
    var boot = timespec()
    clock_gettime(CLOCK_BOOTTIME, &boot)
    clock_gettime(CLOCK_REALTIME, &wall)
    return (Int64(wall.tv_sec) - Int64(boot.tv_sec)) * 1_000_000_000 + (Int64(wall.tv_nsec) - Int64(boot.tv_nsec))
}
