import Testing

@testable import ConnCore

@Suite("Line buffer")
struct LineBufferTests {
    @Test("Decimals have no leading zeros at every width boundary", arguments: [
        0, 9, 10, 99, 100, 255, 999, 1000, 65535, 99_999, 100_000, 999_999_999, 1_000_000_000, UInt32.max,
    ] as [UInt32])
    func decimal(value: UInt32) {
        var line = LineBuffer(capacity: 0)
        line.appendDecimal(value)
        #expect(line.text == String(value))
    }

    @Test("Padded decimals keep their width, and wider values are printed whole")
    func padded() {
        var line = LineBuffer()
        line.appendPadded(42, width: 6)
        line.append(",")
        line.appendPadded(0, width: 2)
        line.append(",")
        line.appendPadded(12345, width: 4)
        line.append(",")
        line.appendPadded(UInt32.max, width: 10)
        #expect(line.text == "000042,00,12345,4294967295")
    }

    @Test("Hexadecimal groups drop leading zeros")
    func hex() {
        var line = LineBuffer()
        for value: UInt16 in [0, 0xf, 0x10, 0xdb8, 0xffff] {
            line.appendHex(value)
            line.append(" ")
        }
        #expect(line.text == "0 f 10 db8 ffff ")
    }

    @Test("The buffer grows past its capacity without losing bytes")
    func growth() {
        var line = LineBuffer(capacity: 64)
        var expected = ""
        for index in 0..<1000 {
            line.appendDecimal(UInt32(index))
            line.append(contentsOf: "é,")
            line.append(UInt8(ascii: ";"))
            expected += "\(index)é,;"
        }
        #expect(line.text == expected)
        line.removeAll()
        let isEmpty = line.isEmpty
        #expect(isEmpty)
        line.append("again")
        #expect(line.text == "again")
    }

    @Test("Addresses render as before: dotted quads and RFC 5952 text")
    func addresses() {
        for text in ["0.0.0.0", "255.255.255.255", "198.51.100.7", "::", "::1", "2001:db8::1", "2001:db8:0:1:1:1:1:1",
            "2001:0:0:1::1", "fe80::1:0:0:1", "1::", "1:2:3:4:5:6:7:8"]
        {
            #expect(IPAddress(text)?.description == text)
        }
    }
}

extension LineBufferTests {
    @Test("Every octet value renders in a dotted quad, next to other text", arguments: 0...255)
    func octets(octet: Int) {
        let value = UInt32(octet)
        var line = LineBuffer(capacity: 0)
        line.append("[")
        line.appendIPv4(value << 24 | value << 16 | value << 8 | value)
        line.append("]")
        #expect(line.text == "[\(octet).\(octet).\(octet).\(octet)]")
    }
}
