// libFuzzer target for ConnectionPipeline: the input is decoded by PipelineFuzzInput into settings (tiny state
// caps, a threshold) and a sequence of frames and batch ends, run through the real pipeline and a naive model
// (PipelineModel), and checked by PipelineProperties. Build and run with Tests/Fuzz/run-fuzz.sh.
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = PipelineFuzzInput(UnsafeRawBufferPointer(start: start, count: count))
    FuzzFailure.abortIfAny(PipelineProperties.violations(input))
    return 0
}
