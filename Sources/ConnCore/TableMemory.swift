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

    /// Whether a region of `byteCount` bytes is mapped from the kernel (page-aligned, handed back page by page)
    /// rather than taken from the allocator.
    static func isMapped(byteCount: Int) -> Bool {
        #if os(Linux)
        byteCount >= hugePageThreshold
        #else
        false
        #endif
    }

    static func allocateZeroed(byteCount: Int) -> UnsafeMutableRawPointer {
        precondition(byteCount > 0)
        guard isMapped(byteCount: byteCount) else {
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
        preconditionFailure("regions are mapped on Linux only")
        #endif
    }

    /// Makes the first `byteCount` bytes of a region from ``allocateZeroed(byteCount:)`` (of `regionByteCount`
    /// bytes) read as zero again. The whole pages of a mapped region go back to the kernel, so a table that shrinks
    /// also stops holding memory.
    static func zero(_ memory: UnsafeMutableRawPointer, byteCount: Int, regionByteCount: Int) {
        precondition(byteCount >= 0 && byteCount <= regionByteCount)
        var cleared = 0
        #if os(Linux)
        if isMapped(byteCount: regionByteCount) {
            let page = Int(sysconf(Int32(_SC_PAGESIZE)))
            let wholePages = byteCount / page * page
            if wholePages > 0, madvise(memory, wholePages, MADV_DONTNEED) == 0 { cleared = wholePages }
        }
        #endif
        (memory + cleared).initializeMemory(as: UInt8.self, repeating: 0, count: byteCount - cleared)
    }

    /// Frees a region from ``allocateZeroed(byteCount:)`` of the same size.
    static func deallocate(_ memory: UnsafeMutableRawPointer, byteCount: Int) {
        #if os(Linux)
        if isMapped(byteCount: byteCount) {
            munmap(memory, byteCount)
            return
        }
        #endif
        memory.deallocate()
    }
}

