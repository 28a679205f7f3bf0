import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// What every connection of the metrics endpoint needs to answer a request.
struct MetricsResponder: Sendable {
    let exposition: @Sendable () -> [UInt8]
    let isHealthy: @Sendable () -> Bool
    let maxBodyBytes: Int
    let idleTimeout: TimeAmount
    let maxConnectionAge: TimeAmount
    let maxRequestsPerConnection: Int
    /// Told when a request starts and ends, to pick connections to evict.
    let connections: EndpointConnections
    /// Renders the exposition, so that scrape hooks reading kernel maps never hold up an event loop.
    let threadPool: NIOThreadPool
}

/// Answers `GET /metrics` and `GET /healthz` on one HTTP/1.1 connection, after NIO's decoder and
/// `HTTPServerPipelineHandler`, which hand it one request at a time.
///
/// A connection is closed when no complete request arrives within the idle timeout of it opening or of the last
/// response, which also ends connections that trickle a request head in byte by byte; and after the response that
/// finds it past its age or request limit.
final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private struct Request {
        var head: HTTPRequestHead
        var bodyBytes = 0
    }

    private enum State {
        /// Waiting for a request head.
        case idle
        /// A head arrived; waiting for the end of its body.
        case receiving(Request)
        /// A response is being produced or written.
        case responding
        /// An error response was sent; the rest of the input is ignored and the connection closes.
        case closing
    }

    private let responder: MetricsResponder
    private let opened = NIODeadline.now()
    private var requests = 0
    private var state = State.idle
    private var quiescing = false
    private var idleTimer: Scheduled<Void>?

    init(responder: MetricsResponder) {
        self.responder = responder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armIdleTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armIdleTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelIdleTimer()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelIdleTimer()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), state) {
        case (.head(let head), .idle):
            // Refuse a declared oversized body before reading any of it.
            if let declared = head.headers.first(name: "content-length").flatMap(Int.init),
                declared > responder.maxBodyBytes
            {
                fail(context: context, status: .payloadTooLarge, version: head.version)
                return
            }
            state = .receiving(Request(head: head))
            requests += 1
            responder.connections.setBusy(context.channel, true)
        case (.body(let chunk), .receiving(var request)):
            request.bodyBytes += chunk.readableBytes
            guard request.bodyBytes <= responder.maxBodyBytes else {
                fail(context: context, status: .payloadTooLarge, version: request.head.version)
                return
            }
            state = .receiving(request)
        case (.end, .receiving(let request)):
            // The timer runs until the whole request is in, so a body trickled in slowly is bounded too.
            cancelIdleTimer()
            state = .responding
            answer(request.head, context: context)
        case (_, .closing):
            break
        case (_, .idle), (_, .receiving), (_, .responding):
            // HTTPServerPipelineHandler delivers head, body, end in order and one request at a time.
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Graceful shutdown: finish the request in progress, if any, and close after its response.
            quiescing = true
            if case .idle = state { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let status: HTTPResponseStatus?
        switch error {
        case let error as HTTPParserError where error == .headerOverflow:
            // The decoder's limits count every byte of the head: request line, names and values.
            status = .requestHeaderFieldsTooLarge
        case is HTTPParserError:
            status = .badRequest
        default:
            // Connection reset and the like: nobody is left to answer.
            status = nil
        }
        switch state {
        case .idle, .receiving:
            // Only for parser errors: HTTPServerPipelineHandler then expects a response (and would treat one
            // after any other error as a protocol violation).
            if let status {
                fail(context: context, status: status, version: .http1_1)
                return
            }
        case .responding, .closing:
            break
        }
        context.close(promise: nil)
    }

    // MARK: Answers

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        // A query string changes nothing, as for Prometheus' own exporters.
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" || path == "/healthz" else {
            respond(context: context, to: head, status: .notFound, body: "not found\n")
            return
        }
        guard head.method == .GET else {
            var headers = HTTPHeaders()
            headers.add(name: "Allow", value: "GET")
            // A response to HEAD has no body, and NIO's encoder does not know which method this answers.
            let body = head.method == .HEAD ? "" : "method not allowed\n"
            respond(context: context, to: head, status: .methodNotAllowed, body: body, headers: headers)
            return
        }
        if path == "/healthz" {
            if responder.isHealthy() {
                respond(context: context, to: head, status: .ok, body: "ok\n")
            } else {
                respond(context: context, to: head, status: .serviceUnavailable, body: "capture not running\n")
            }
            return
        }
        let exposition = responder.exposition
        responder.threadPool.runIfActive(eventLoop: context.eventLoop) { exposition() }
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let bytes):
                    let body = context.channel.allocator.buffer(bytes: bytes)
                    self.respond(
                        context: context,
                        to: head,
                        status: .ok,
                        body: body,
                        contentType: PrometheusMetricsSink.contentType
                    )
                case .failure:
                    // The thread pool is shutting down with the process.
                    self.respond(context: context, to: head, status: .serviceUnavailable, body: "shutting down\n")
                }
            }
    }

    /// Answers with an error and closes, ignoring whatever else the client sends.
    private func fail(context: ChannelHandlerContext, status: HTTPResponseStatus, version: HTTPVersion) {
        state = .closing
        cancelIdleTimer()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "0")
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(version: version, status: status, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
        // Also bounded in time, for a client that never reads the answer.
        armIdleTimer(context: context)
    }

    private func respond(
        context: ChannelHandlerContext,
        to request: HTTPRequestHead,
        status: HTTPResponseStatus,
        body: String,
        headers: HTTPHeaders = HTTPHeaders()
    ) {
        let buffer = context.channel.allocator.buffer(string: body)
        respond(context: context, to: request, status: status, body: buffer, headers: headers)
    }

    private func respond(
        context: ChannelHandlerContext,
        to request: HTTPRequestHead,
        status: HTTPResponseStatus,
        body: ByteBuffer,
        contentType: String = "text/plain; charset=utf-8",
        headers extra: HTTPHeaders = HTTPHeaders()
    ) {
        let keepAlive =
            request.isKeepAlive && !quiescing && requests < responder.maxRequestsPerConnection
            && NIODeadline.now() - opened < responder.maxConnectionAge
        var headers = extra
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if request.version == .http1_0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 { context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let written = context.writeAndFlush(Self.wrapOutboundOut(.end(nil)))
        if keepAlive {
            state = .idle
            responder.connections.setBusy(context.channel, false)
        } else {
            state = .closing
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
        // Armed either way: it also closes a connection whose client never reads its answer.
        armIdleTimer(context: context)
    }

    // MARK: Idle timeout

    private func armIdleTimer(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: responder.idleTimeout) {
            context.close(promise: nil)
        }
    }

    private func cancelIdleTimer() {
        idleTimer?.cancel()
        idleTimer = nil
    }
}

@available(*, unavailable)
extension MetricsHTTPHandler: Sendable {}
