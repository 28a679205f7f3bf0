// libFuzzer target for `FrameParser.classify`: the first input byte picks the link type (FuzzLinkTypes.all), the
// rest is the frame. Checks the properties of FrameParserProperties. Build and run with Tests/Fuzz/run-fuzz.sh.
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 1 else { return 0 }
    let linkType = FuzzLinkTypes.all[Int(start.load(as: UInt8.self)) % FuzzLinkTypes.all.count]
    // libFuzzer hands over a heap copy of exactly `count` bytes, so AddressSanitizer sees any read past its end.
    let frame = UnsafeRawBufferPointer(start: start + 1, count: count - 1)
    FuzzFailure.abortIfAny(FrameParserProperties.violations(frame, linkType: linkType))
    return 0
}
