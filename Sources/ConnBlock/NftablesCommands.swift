internal import CNftElements
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

/// Changes nftables for an ``NftablesBlocker``: the one seam between the blocker and the kernel, so that unit tests
/// can record what a blocker writes and answer it without one.
public protocol NftablesCommands: AnyObject, Sendable {
    /// Runs `commands` (nft syntax, several lines) as one transaction.
    /// - Parameter json: print listings in nftables' JSON schema rather than as text.
    /// - Throws: ``ConntrackrError`` only when the commands could not be run at all; commands that run and fail
    ///   are a result that did not succeed.
    func run(_ commands: String, json: Bool) throws(ConntrackrError) -> NftablesResult

    /// Applies `changes` to sets of the table `table` (family `inet`) as one transaction.
    /// - Throws: ``ConntrackrError`` only when the kernel's answer could not be had (the socket failed, no answer in
    ///   time, a name too long to send); changes the kernel refuses are an outcome.
    func apply(_ changes: [NftablesElementChange], table: String) throws(ConntrackrError) -> NftablesChangeOutcome
}

/// Changes nftables in this process, with no `nft` process: commands (the table, listings, interval sets) through
/// libnftables, and set element changes written straight over netlink with libnftnl, one batch and one `sendmsg`
/// each, on a socket kept open. libnftables parses each command and refreshes its cache with netlink dumps first,
/// which costs 0.2 ms back to back and a millisecond or more after an idle pause; a netlink batch costs the
/// kernel's own work.
///
/// One libnftables context and one netlink socket, neither thread-safe, owned by this object and each used under
/// its own lock. Both are opened when the object is made, in the network namespace given or in the process's own,
/// and stay in it.
public final class KernelNftables: NftablesCommands, @unchecked Sendable {
    // @unchecked: the context pointer is only ever used while `lock` is held, the socket while `socketLock` is;
    // both are freed in deinit.
    private let context: OpaquePointer
    private let lock = Mutex(())
    private let socket: OpaquePointer
    private let socketLock = Mutex(())
    /// How long to wait for the kernel's answer to a batch.
    private static let answerTimeout: UInt32 = 5_000
    /// NFPROTO_INET.
    private static let inetFamily: UInt8 = 1
    /// The most changes sent in one batch (the C side's buffer holds at least 60); a longer list is sent as several.
    static let changesPerBatch = 32

    /// A context and socket in the network namespace open at `networkNamespace` (such as `/run/netns/NAME`), or in
    /// this process's own when `nil`.
    /// - Throws: ``ConntrackrError`` (`blockerFailed`) when the namespace cannot be entered or libnftables or the
    ///   netlink socket cannot be made.
    public init(networkNamespace: String? = nil) throws(ConntrackrError) {
        let made: Handles
        if let networkNamespace {
            made = try Self.handles(in: networkNamespace)
        } else {
            made = Self.openHandles()
        }
        guard let context = made.contextPointer, let socket = made.socketPointer else {
            made.close()
            if made.context == nil {
                throw ConntrackrError(.blockerFailed, "nftables: libnftables could not make a context (out of memory?)")
            }
            throw ConntrackrError(
                .blockerFailed,
                "nftables: cannot open a netlink socket to nf_tables: \(String(cString: strerror(made.socketErrno)))"
            )
        }
        nft_ctx_buffer_output(context)
        nft_ctx_buffer_error(context)
        self.context = context
        self.socket = socket
    }

    deinit {
        nft_ctx_free(context)
        ct_nft_socket_close(socket)
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

    public func apply(
        _ changes: [NftablesElementChange], table: String
    ) throws(ConntrackrError) -> NftablesChangeOutcome {
        guard !changes.isEmpty else { return .applied }
        return try socketLock.withLock { _ throws(ConntrackrError) -> NftablesChangeOutcome in
            ct_nft_batch_start(socket, Self.inetFamily, table)
            for change in changes {
                let appended = Self.append(change, to: socket)
                guard appended == 0 else {
                    throw ConntrackrError(
                        .blockerFailed,
                        "nftables: cannot write element \(change.element.key) of set \(change.set): "
                            + String(cString: strerror(-appended))
                    )
                }
            }
            var failed: Int32 = -1
            let sent = ct_nft_batch_send(socket, Self.answerTimeout, &failed)
            if sent < 0 {
                throw ConntrackrError(
                    .blockerFailed, "nftables: netlink batch to nf_tables failed: \(String(cString: strerror(-sent)))"
                )
            }
            return sent == 0 ? .applied : .refused(errno: sent, change: failed >= 0 ? Int(failed) : nil)
        }
    }

    private static func append(_ change: NftablesElementChange, to socket: OpaquePointer) -> Int32 {
        let kind: ct_nft_element_kind =
            switch change.kind {
            case .create: CT_NFT_ELEMENT_CREATE
            case .add: CT_NFT_ELEMENT_ADD
            case .delete: CT_NFT_ELEMENT_DELETE
            }
        let element = change.element
        let key = element.key.bytes
        let timeout = element.timeout.map(NftablesScript.milliseconds) ?? 0
        return key.withUnsafeBufferPointer { key in
            // A nil comment is passed as a null pointer: none.
            ct_nft_batch_append(socket, kind, change.set, key.baseAddress, UInt32(key.count), timeout, element.comment)
        }
    }

    /// The handles made, as addresses (so that they cross threads as plain values); `nil` when not made.
    private struct Handles: Sendable {
        var context: UInt?
        var socket: UInt?
        var socketErrno: Int32 = 0

        var contextPointer: OpaquePointer? { context.flatMap { OpaquePointer(bitPattern: $0) } }
        var socketPointer: OpaquePointer? { socket.flatMap { OpaquePointer(bitPattern: $0) } }

        /// Frees whichever handles were made.
        func close() {
            if let contextPointer { nft_ctx_free(contextPointer) }
            if let socketPointer { ct_nft_socket_close(socketPointer) }
        }
    }

    /// Makes the libnftables context and the netlink socket in the calling thread's network namespace.
    private static func openHandles() -> Handles {
        var handles = Handles()
        handles.context = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)).map { UInt(bitPattern: $0) }
        let socket = ct_nft_socket_open()
        handles.socketErrno = errno
        handles.socket = socket.map { UInt(bitPattern: $0) }
        return handles
    }

    /// Makes the handles on a thread of its own that enters the namespace for the moment it takes: were returning
    /// to the agent's namespace to fail, only that thread, which then ends, would be left in the wrong one (and the
    /// handles made are closed).
    private static func handles(in namespace: String) throws(ConntrackrError) -> Handles {
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
        // step: 1 entering failed, 3 returning failed (errno with it).
        let made = Mutex<(handles: Handles, step: Int32, errno: Int32)>((Handles(), 0, 0))
        let done = DispatchSemaphore(value: 0)
        let started = DetachedThread.start {
            defer { done.signal() }
            guard setns(target, CT_CLONE_NEWNET) == 0 else {
                let error = errno
                made.withLock { $0 = (Handles(), 1, error) }
                return
            }
            let handles = openHandles()
            guard setns(home, CT_CLONE_NEWNET) == 0 else {
                let error = errno
                handles.close()
                made.withLock { $0 = (Handles(), 3, error) }
                return
            }
            made.withLock { $0 = (handles, 0, 0) }
        }
        guard started == 0 else {
            throw ConntrackrError(
                .blockerFailed, "nftables: cannot start a thread: \(String(cString: strerror(started)))"
            )
        }
        done.wait()
        let (handles, step, error) = made.withLock { $0 }
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
            return handles
        }
    }
}
