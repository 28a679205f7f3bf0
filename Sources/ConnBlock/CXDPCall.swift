import CXDP
import ConnCore

#if canImport(Glibc)
import Glibc
#endif

// The same small glue as ConnCapture's CXDPCall.swift: the two modules cannot share internal Swift code, and
// ConnCore must not know the loader.

/// Calls a `ct_` function of the CXDP loader with a message buffer and turns a negative errno into a
/// ``ConntrackrError`` carrying the loader's one-line message.
/// - Returns: the function's non-negative result.
@discardableResult
func cxdpCall(
    failing code: ConntrackrError.Code = .blockerFailed,
    _ body: (UnsafeMutablePointer<CChar>, Int) -> Int32
) throws(ConntrackrError) -> Int32 {
    var failure: ConntrackrError?
    let result = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 512) { buffer -> Int32 in
        let base = buffer.baseAddress!
        base[0] = 0
        let result = body(base, buffer.count)
        if result < 0 {
            let text = base[0] != 0 ? String(cString: base) : String(cString: strerror(-result))
            let specific: ConntrackrError.Code? =
                switch -result {
                case EPERM, EACCES: .missingPrivilege
                case ENOMEDIUM: .kernelUnsupported
                default: nil
                }
            failure = ConntrackrError(specific ?? code, text)
        }
        return result
    }
    if let failure { throw failure }
    return result
}

/// Wall-clock nanoseconds minus CLOCK_BOOTTIME nanoseconds, the clock the XDP program compares expiry times with.
func bootToWallOffset() -> Int64 {
    var wall = timespec()
    var boot = timespec()
    clock_gettime(CLOCK_BOOTTIME, &boot)
    clock_gettime(CLOCK_REALTIME, &wall)
    return (Int64(wall.tv_sec) - Int64(boot.tv_sec)) * 1_000_000_000 + (Int64(wall.tv_nsec) - Int64(boot.tv_nsec))
}
