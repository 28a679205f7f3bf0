internal import CNftables
public import ConnCore
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What nftables said to one batch of commands.
public struct NftablesResult: Hashable, Sendable {
    /// Whether the kernel accepted the batch (it applies all of a batch or none of it).
    public var succeeded: Bool
    /// What the commands printed: a listing, in JSON when asked for.
    public var output: String
    /// nft's error messages, possibly several lines (the offending command and a caret line follow each).
    public var error: String

    public init(succeeded: Bool, output: String = "", error: String = "") {
        self.succeeded = succeeded
        self.output = output
        self.error = error
    }
}

/// Runs nftables commands for an ``NftablesBlocker``: the one seam between the blocker and the kernel, so that unit
/// tests can record the commands a blocker writes and answer them without one.
public protocol NftablesCommands: AnyObject, Sendable {
    /// Runs `commands` (nft syntax, several lines) as one transaction.
    /// - Parameter json: print listings in nftables' JSON schema rather than as text.
    /// - Throws: ``ConntrackrError`` only when the commands could not be run at all; commands that run and fail
    ///   are a result that did not succeed.
    func run(_ commands: String, json: Bool) throws(ConntrackrError) -> NftablesResult
}

/// Runs nftables commands in this process through libnftables: no `nft` process is started, so a change costs a
/// netlink round trip rather than a fork and exec.
///
/// One libnftables context, which is not thread-safe, owned by this object and used under its lock: calls are
/// serialised. The context's netlink socket is opened when the object is made, in the network namespace given or in
/// the process's own, and stays in it.
public final class LibNftables: NftablesCommands, @unchecked Sendable {
    // @unchecked: the context pointer is only ever used while `lock` is held, and freed in deinit.
    private let context: OpaquePointer
    private let lock = Mutex(())

    /// A context in the network namespace open at `networkNamespace` (such as `/run/netns/NAME`), or in this
    /// process's own when `nil`.
    /// - Throws: ``ConntrackrError`` (`blockerFailed`) when the namespace cannot be entered or libnftables cannot
    ///   make a context.
    public init(networkNamespace: String? = nil) throws(ConntrackrError) {
        let made: OpaquePointer?
        if let networkNamespace {
            made = try Self.context(in: networkNamespace)
        } else {
            made = nft_ctx_new(UInt32(NFT_CTX_DEFAULT))
        }
        guard let made else {
            throw ConntrackrError(.blockerFailed, "nftables: libnftables could not make a context (out of memory?)")
        }
        nft_ctx_buffer_output(made)
        nft_ctx_buffer_error(made)
        context = made
    }

    deinit {
        nft_ctx_free(context)
    }

    public func run(_ commands: String, json: Bool) throws(ConntrackrError) -> NftablesResult {
        lock.withLock { _ in
            let flags = nft_ctx_output_get_flags(context)
            let jsonFlag = UInt32(NFT_CTX_OUTPUT_JSON)
            nft_ctx_output_set_flags(context, json ? flags | jsonFlag : flags & ~jsonFlag)
            let status = nft_run_cmd_from_buffer(context, commands)
            // Reading a buffer also empties it for the next run.
            let output = nft_ctx_get_output_buffer(context).map { String(cString: $0) } ?? ""
            let error = nft_ctx_get_error_buffer(context).map { String(cString: $0) } ?? ""
            return NftablesResult(succeeded: status == 0, output: output, error: error)
        }
    }

    /// Makes a context on a thread of its own that enters the namespace for the moment it takes: were returning to
    /// the agent's namespace to fail, only that thread, which then ends, would be left in the wrong one.
    private static func context(in namespace: String) throws(ConntrackrError) -> OpaquePointer? {
        let target = open(namespace, O_RDONLY | O_CLOEXEC)
        guard target >= 0 else {
            throw ConntrackrError(
                .blockerFailed,
                "nftables: cannot open network namespace \(namespace): \(String(cString: strerror(errno)))"
            )
        }
        defer { close(target) }
        let home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else {
            throw ConntrackrError(
                .blockerFailed,
                "nftables: cannot open this process's network namespace: \(String(cString: strerror(errno)))"
            )
        }
        defer { close(home) }
        let made = Mutex<(pointer: UInt?, step: Int32, errno: Int32)>((nil, 0, 0))
        let done = DispatchSemaphore(value: 0)
        let started = DetachedThread.start {
            var step: Int32 = 0
            let pointer = ct_nft_ctx_new_in(target, home, &step)
            let error = errno
            made.withLock { $0 = (pointer.map { UInt(bitPattern: $0) }, step, error) }
            done.signal()
        }
        guard started == 0 else {
            throw ConntrackrError(
                .blockerFailed, "nftables: cannot start a thread: \(String(cString: strerror(started)))"
            )
        }
        done.wait()
        let (pointer, step, error) = made.withLock { $0 }
        switch step {
        case 1:
            throw ConntrackrError(
                .blockerFailed,
                "nftables: cannot enter network namespace \(namespace): \(String(cString: strerror(error)))"
            )
        case 3:
            throw ConntrackrError(
                .blockerFailed,
                "nftables: cannot return from network namespace \(namespace): \(String(cString: strerror(error)))"
            )
        default:
            return pointer.flatMap { OpaquePointer(bitPattern: $0) }
        }
    }
}
