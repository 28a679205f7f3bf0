#if canImport(Glibc)
import Glibc
#endif

/// Zero-filled, cache-line-aligned memory for the large per-key tables (scan pairs, retransmit fingerprints).
///
/// Their lookups land on random addresses across many megabytes, so besides the cache miss each one would also
/// miss the TLB, and a page walk under virtualisation costs several more memory accesses. Regions of at least
/// ``hugePageThreshold`` are therefore mapped from the kernel and marked for transparent huge pages (one TLB entry
/// per 2 MiB instead of per 4 KiB), where the kernel allows it. Pages are still committed only when first touched.
enum TableMemory {
    /// Smaller regions come from the allocator.
    static let hugePageThreshold = 2 << 20

    static func allocateZeroed(byteCount: Int) -> UnsafeMutableRawPointer {
        precondition(byteCount > 0)
        if byteCount < hugePageThreshold {
            let memory = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
            memory.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
            return memory
        }
        #if os(Linux)
        let mapped = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else {
            fatalError("cannot map \(byteCount) bytes for a lookup table: \(String(cString: strerror(errno)))")
        }
        // Advice only: without transparent huge pages the mapping keeps ordinary pages.
        _ = madvise(mapped, byteCount, MADV_HUGEPAGE)
        return mapped
        #else
        let memory = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        return memory
        #endif
    }

    /// Frees a region from ``allocateZeroed(byteCount:)`` of the same size.
    static func deallocate(_ memory: UnsafeMutableRawPointer, byteCount: Int) {
        #if os(Linux)
        if byteCount >= hugePageThreshold {
            munmap(memory, byteCount)
            return
        }
        #endif
        memory.deallocate()
    }
}
