import Synchronization

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

    /// Makes `byteCount` bytes from `offset` of a region from ``allocateZeroed(byteCount:)`` (of `regionByteCount`
    /// bytes) read as zero again. Whole pages of a mapped region go back to the kernel, so a table that shrinks
    /// also stops holding memory.
    static func zero(
        _ memory: UnsafeMutableRawPointer,
        from offset: Int,
        byteCount: Int,
        regionByteCount: Int
    ) {
        precondition(offset >= 0 && byteCount >= 0 && offset + byteCount <= regionByteCount)
        #if os(Linux)
        if regionByteCount >= hugePageThreshold {
            let page = Int(sysconf(Int32(_SC_PAGESIZE)))
            let firstPage = (offset + page - 1) / page * page
            let endPage = (offset + byteCount) / page * page
            if firstPage < endPage, madvise(memory + firstPage, endPage - firstPage, MADV_DONTNEED) == 0 {
                // The partial pages at either end are cleared by hand.
                (memory + offset).initializeMemory(as: UInt8.self, repeating: 0, count: firstPage - offset)
                (memory + endPage).initializeMemory(as: UInt8.self, repeating: 0, count: offset + byteCount - endPage)
                return
            }
        }
        #endif
        (memory + offset).initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
    }

    /// Commits the pages of `byteCount` bytes from `memory` without changing what they hold, so that first writes
    /// to them do not wait for the kernel to find and zero pages. Advice only: nothing happens where the kernel
    /// cannot do it (before Linux 5.14, or out of memory).
    static func commit(_ memory: UnsafeMutableRawPointer, byteCount: Int) {
        #if os(Linux)
        _ = madvise(memory, byteCount, MADV_POPULATE_WRITE)
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

/// The part of a large table's region its owner is about to write, which another thread can commit ahead of it
/// (``TableMemory/commit(_:byteCount:)``), so that the owner does not wait for fresh pages.
///
/// A replay's reading thread commits, at each batch it hands over, what the pipeline's tables will grow into; the
/// kernel, not the pipeline's thread, then finds and zeroes the pages. Committing never changes what the pages
/// hold, so the two threads share nothing but these two numbers.
final class TableRegionCommitment: Sendable {
    /// The region's address, as a number (a pointer is not `Sendable`).
    private let base: UInt
    private let wanted = Atomic<Int>(0)
    private let committed = Atomic<Int>(0)

    init(base: UnsafeMutableRawPointer) {
        self.base = UInt(bitPattern: base)
    }

    /// The owner's thread: the region's first `byteCount` bytes will be written soon.
    func want(_ byteCount: Int) {
        wanted.store(byteCount, ordering: .relaxed)
    }

    /// The owner's thread, after handing the region's pages back: nothing is committed any more. A commit running
    /// meanwhile may leave pages committed that are not needed yet; they hold zeros either way.
    func forget() {
        wanted.store(0, ordering: .relaxed)
        committed.store(0, ordering: .relaxed)
    }

    /// Any thread: commits what is wanted and not committed yet.
    func commit() {
        let target = wanted.load(ordering: .relaxed)
        let done = committed.load(ordering: .relaxed)
        guard target > done, let start = UnsafeMutableRawPointer(bitPattern: base) else { return }
        TableMemory.commit(start + done, byteCount: target - done)
        committed.store(target, ordering: .relaxed)
    }
}
