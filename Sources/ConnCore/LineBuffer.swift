/// A growable byte buffer that event lines are rendered into.
///
/// Every event goes through here, so appends are kept to a capacity check and a store or a `memcpy`: an
/// `[UInt8]` would also check uniqueness on every append and take generic paths for string contents.
struct LineBuffer: ~Copyable {
    private var start: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    /// Bytes written so far.
    private(set) var count = 0

    init(capacity: Int = 1 << 16) {
        self.capacity = max(capacity, 64)
        start = .allocate(capacity: self.capacity)
    }

    deinit { start.deallocate() }

    var isEmpty: Bool { count == 0 }

    /// The bytes written so far, valid until the next mutation.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: start, count: count) }

    mutating func removeAll() { count = 0 }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        if count == capacity { grow(toHold: 1) }
        start[count] = byte
        count += 1
    }

    @inline(__always)
    mutating func append(_ text: StaticString) {
        append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    @inline(__always)
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        if capacity - count < bytes.count { grow(toHold: bytes.count) }
        UnsafeMutableRawPointer(start + count).copyMemory(from: source, byteCount: bytes.count)
        count += bytes.count
    }

    /// Appends the UTF-8 of a `String`; for the rare events whose text is not static.
    mutating func append(contentsOf text: String) {
        var text = text
        text.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Appends `value` in decimal, without leading zeros.
    @inline(__always)
    mutating func appendDecimal(_ value: UInt32) {
        appendDigits(value, width: Self.decimalWidth(value))
    }

    /// Appends `value` in decimal, left-padded with zeros to `width` digits; wider values are printed whole.
    @inline(__always)
    mutating func appendPadded(_ value: UInt32, width: Int) {
        appendDigits(value, width: max(width, Self.decimalWidth(value)))
    }

    @inline(__always)
    private static func decimalWidth(_ value: UInt32) -> Int {
        var width = 1
        var bound: UInt64 = 10
        while UInt64(value) >= bound {
            width += 1
            bound &*= 10
        }
        return width
    }

    /// Writes the last `width` decimal digits of `value`.
    @inline(__always)
    private mutating func appendDigits(_ value: UInt32, width: Int) {
        if capacity - count < width { grow(toHold: width) }
        var remaining = value
        var index = count + width
        while index > count {
            index -= 1
            start[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remaining % 10)
            remaining /= 10
        }
        count += width
    }

    /// Appends an IPv4 address (`a.b.c.d` is `a << 24 | b << 16 | c << 8 | d`) as a dotted quad.
    @inline(__always)
    mutating func appendIPv4(_ value: UInt32) {
        // Each octet is one 4-byte store of its digits from a table; the byte past the digits is overwritten next.
        if capacity - count < 16 { grow(toHold: 16) }
        var cursor = UnsafeMutableRawPointer(start + count)
        Self.octetText.withUnsafeBufferPointer { table in
            for shift: UInt32 in [24, 16, 8, 0] {
                let packed = table[Int(value >> shift & 0xFF)]
                cursor.storeBytes(of: (packed >> 8).littleEndian, as: UInt32.self)
                cursor += Int(packed & 0xFF)
                cursor.storeBytes(of: UInt8(ascii: "."), as: UInt8.self)
                cursor += 1
            }
        }
        count = cursor - UnsafeMutableRawPointer(start) - 1
    }

    /// The decimal text of 0 to 255: digit count in the low byte, then the digits, first digit lowest.
    private static let octetText: [UInt32] = (0...255).map { octet in
        let digits = Array(String(octet).utf8)
        return digits.reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) } << 8 | UInt32(digits.count)
    }

    /// Appends `value` in lower-case hexadecimal, without leading zeros.
    @inline(__always)
    mutating func appendHex(_ value: UInt16) {
        let digits: StaticString = "0123456789abcdef"
        var started = false
        for shift in stride(from: 12, through: 0, by: -4) {
            let nibble = Int(value >> UInt16(shift) & 0xF)
            if nibble != 0 || started || shift == 0 {
                started = true
                append(digits.utf8Start[nibble])
            }
        }
    }

    private mutating func grow(toHold extra: Int) {
        var newCapacity = capacity * 2
        while newCapacity - count < extra { newCapacity *= 2 }
        let grown = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        grown.initialize(from: start, count: count)
        start.deallocate()
        start = grown
        capacity = newCapacity
    }

    /// The bytes written, as a `String` (they are always UTF-8).
    var text: String { String(decoding: bytes, as: UTF8.self) }
}
