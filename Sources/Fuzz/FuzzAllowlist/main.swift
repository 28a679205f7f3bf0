// libFuzzer target for the address, prefix and allow-file parsers: the input is an allow file, checked whole by
// AllowFileProperties and line by line by AddressTextProperties. Build and run with Tests/Fuzz/run-fuzz.sh.
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    FuzzFailure.abortIfAny(AllowlistFuzzInput.violations(UnsafeRawBufferPointer(start: start, count: count)))
    return 0
}
