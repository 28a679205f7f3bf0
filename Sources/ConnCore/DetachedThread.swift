#if canImport(Glibc)
import Glibc
#endif

/// Starts POSIX threads for blocking loops (capture, address watching) that must not hold a cooperative thread of
/// Swift concurrency, of which a two-core host has two.
public enum DetachedThread: Sendable {
    /// Runs `body` on a new detached thread.
    /// - Returns: 0, or the `pthread_create` error number, in which case `body` never runs.
    public static func start(_ body: @escaping @Sendable () -> Void) -> Int32 {
        let box = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, box)
        if created != 0 {
            Unmanaged<Body>.fromOpaque(box).release()
        } else {
            pthread_detach(thread)
        }
        return created
    }

    private final class Body: Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }
}
