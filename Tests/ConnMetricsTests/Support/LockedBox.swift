import Synchronization

/// A value shared between a test and the closures it hands to the code under test.
final class LockedBox<Value: Sendable>: Sendable {
    private let value: Mutex<Value>

    init(_ value: Value) { self.value = Mutex(value) }

    func get() -> Value { value.withLock { $0 } }
    func set(_ newValue: Value) { value.withLock { $0 = newValue } }
    func mutate(_ body: (inout Value) -> Void) { value.withLock { body(&$0) } }
}
