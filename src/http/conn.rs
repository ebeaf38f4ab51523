//! One HTTP/1.1 connection: keep-alive, pipelining (answered in order, written in one batch),
//! idle and write timeouts, bounded buffers, and a prompt exit on shutdown.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::ErrorKind;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use futures::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;

use super::request::{parse, Method, ParseError, Parsed, Request, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use super::request_id::RequestId;
use super::response::{Response, CONTINUE};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// Responses composed before they are written, even when many pipelined requests are buffered:
/// a read of small requests whose answers are large (`/metrics`) must not grow the output without
/// bound.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;
/// Upper bound on the read buffer: one maximal request plus one read's worth of the next.
const MAX_BUFFERED: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES + READ_CHUNK;
/// Buffer capacity a connection keeps between requests; larger buffers are freed once empty, so
/// an idle keep-alive connection holds at most this much per buffer.
const KEPT_CAPACITY: usize = 2 * 1024;

/// Serves parsed requests. Implemented by the API.
#[allow(async_fn_in_trait)]
pub trait Handler {
    /// Answers one request. Never fails: every failure is an error response.
    async fn handle(&self, request: &Request<'_>, request_id: &RequestId<'_>) -> Response;

    /// Asked once per request whose head is complete and whose body is not (yet): may the client
    /// send the body? `Err` is the answer, sent at once; the connection then closes without
    /// reading (or buffering) the body. This is where credentials are checked, so that an
    /// unauthenticated client can make a connection hold its head and nothing more. On `Ok`, a
    /// client that sent `Expect: 100-continue` is told to go on.
    fn admit_body(&self, request: &Request<'_>, request_id: &RequestId<'_>)
        -> Result<(), Response>;

    /// Told about bytes that were answered with `response` without reaching
    /// [`Handler::handle`]: malformed, oversized or too slow requests.
    fn rejected(&self, response: &Response, request_id: &RequestId<'_>);

    /// Whether the server is shutting down, so keep-alive should end after this response.
    fn draining(&self) -> bool;
}

/// Per-connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A client that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// A client that does not take our bytes for this long is disconnected.
    pub write_timeout: Duration,
}

/// Serves `stream` until the client closes, errs, idles out, or `shutdown` resolves while the
/// connection is between requests.
pub async fn serve_connection<H: Handler>(
    mut stream: TcpStream,
    handler: &H,
    limits: ConnLimits,
    shard_header: &[u8],
    shutdown: impl Future<Output = ()> + Clone,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(limits.idle_timeout))?;
    stream.set_write_timeout(Some(limits.write_timeout))?;
    // Both buffers start empty: a connection that never sends anything holds no buffer at all.
    let mut inbuf = ReadBuffer::default();
    let mut out: Vec<u8> = Vec::new();
    // When the first byte of the request being assembled arrived; `None` between requests.
    let mut request_started: Option<Instant> = None;
    // The whole length of the request at the front of the buffer once it was allowed to send
    // its body: until that many bytes are in, there is nothing to parse again (a body trickling
    // in one byte at a time must not cost a head parse per byte).
    let mut awaiting: Option<usize> = None;
    loop {
        let mut consumed = 0;
        let mut close = false;
        // Set when the output grew past its bound with requests still buffered: write, then
        // answer the rest before reading more.
        let mut more = false;
        while !close && !more {
            if awaiting.is_some_and(|total| inbuf.len() < total) {
                break;
            }
            match parse(&inbuf.data()[consumed..]) {
                Ok(Parsed::Complete(request, used)) => {
                    let request_id = RequestId::for_request(request.request_id);
                    let mut response = handler.handle(&request, &request_id).await;
                    if !request.keep_alive || handler.draining() {
                        response.close = true;
                    }
                    close = response.close;
                    if request.method == Method::Head {
                        response.write_head_to(&mut out, shard_header, &request_id);
                    } else {
                        response.write_to(&mut out, shard_header, &request_id);
                    }
                    consumed += used;
                    awaiting = None;
                    more = out.len() >= MAX_PENDING_OUTPUT;
                }
                Ok(Parsed::AwaitingBody(request, total)) => {
                    let request_id = RequestId::for_request(request.request_id);
                    match handler.admit_body(&request, &request_id) {
                        Ok(()) => {
                            awaiting = Some(total);
                            if request.expect_continue {
                                out.extend_from_slice(CONTINUE);
                            }
                        }
                        Err(response) => {
                            response
                                .closing()
                                .write_to(&mut out, shard_header, &request_id);
                            close = true;
                        }
                    }
                    break;
                }
                Ok(Parsed::Partial) => break,
                Err(error) => {
                    let request_id = RequestId::generate();
                    let response = protocol_error(error);
                    handler.rejected(&response, &request_id);
                    response.write_to(&mut out, shard_header, &request_id);
                    close = true;
                }
            }
        }
        let unread = inbuf.len() > consumed;
        inbuf.consume(consumed);
        if let Some(total) = awaiting {
            inbuf.reserve_for(total);
        }
        if consumed > 0 {
            // A pipelined remainder is the start of the next request.
            request_started = (!inbuf.is_empty()).then(Instant::now);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
            if out.capacity() > KEPT_CAPACITY {
                out = Vec::new();
            }
        }
        if close {
            if unread {
                linger_close(&mut stream).await;
            }
            return Ok(());
        }
        if more {
            continue;
        }
        let filled = inbuf.len();
        if filled >= MAX_BUFFERED {
            // Unreachable while the parser enforces its limits; kept as a hard stop on memory.
            return Ok(());
        }
        if filled == 0 {
            request_started = None;
        }
        let outcome = match request_started {
            // Between requests: wait for the next one, the idle timeout, or shutdown.
            None => {
                let first = {
                    let read = read_chunk(&mut stream, |bytes| inbuf.extend(bytes));
                    match select(pin!(read), pin!(shutdown.clone())).await {
                        Either::Left((result, _)) => Some(result),
                        Either::Right(((), _)) => None,
                    }
                };
                match first {
                    Some(Ok(n)) => Ok(n),
                    Some(Err(error)) if error.kind() == ErrorKind::TimedOut => {
                        Err(ReadEnd::TimedOut)
                    }
                    Some(Err(error)) => Err(ReadEnd::Failed(error)),
                    None => {
                        // Requests may already sit in the socket, not yet polled: answer those
                        // (the response will close), and only then close.
                        match read_within(&mut stream, &mut inbuf, FINAL_READ).await {
                            Ok(n) if n > 0 => Ok(n),
                            _ => {
                                linger_close(&mut stream).await;
                                return Ok(());
                            }
                        }
                    }
                }
            }
            // Mid-request: the whole request must arrive within the timeout from its first byte,
            // however slowly it trickles in.
            Some(started) => {
                let left = limits.idle_timeout.saturating_sub(started.elapsed());
                read_within(&mut stream, &mut inbuf, left).await
            }
        };
        match outcome {
            Ok(0) => return Ok(()),
            Ok(_) => {
                request_started.get_or_insert_with(Instant::now);
            }
            Err(ReadEnd::TimedOut) => {
                if !inbuf.is_empty() {
                    let request_id = RequestId::generate();
                    let timeout =
                        Response::error(408, "request_timeout", "request not completed in time")
                            .closing();
                    handler.rejected(&timeout, &request_id);
                    timeout.write_to(&mut out, shard_header, &request_id);
                    stream.write_all(&out).await?;
                }
                return Ok(());
            }
            Err(ReadEnd::Failed(error)) => return Err(error),
        }
    }
}

thread_local! {
    /// Every read on this shard lands here first and is then copied to its connection's buffer,
    /// so a connection waiting for bytes owns no read buffer of its own. glommio reads straight
    /// into the caller's slice during a poll and keeps no reference to it after the poll, so one
    /// buffer per thread serves every connection.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads once (at most [`READ_CHUNK`] bytes) and hands the bytes to `take`; 0 means end of
/// stream.
async fn read_chunk(stream: &mut TcpStream, mut take: impl FnMut(&[u8])) -> std::io::Result<usize> {
    poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let polled = Pin::new(&mut *stream).poll_read(cx, scratch);
            if let Poll::Ready(Ok(n)) = polled {
                take(&scratch[..n]);
            }
            polled
        })
    })
    .await
}

/// Bytes read from a connection and not yet consumed. It holds exactly the bytes read (no
/// zero-filled spare room), and is freed between requests unless small.
#[derive(Default)]
struct ReadBuffer {
    bytes: Vec<u8>,
}

impl ReadBuffer {
    fn data(&self) -> &[u8] {
        &self.bytes
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends one read's bytes, growing the buffer exactly rather than by doubling: a head
    /// that trickles in just past a power of two must not pin twice its size.
    fn extend(&mut self, bytes: &[u8]) {
        self.bytes.reserve_exact(bytes.len());
        self.bytes.extend_from_slice(bytes);
    }

    /// Makes room for a request whose whole length is now known, in one allocation of the
    /// right size rather than by doubling (which would pin up to twice the body).
    fn reserve_for(&mut self, total: usize) {
        self.bytes
            .reserve_exact(total.saturating_sub(self.bytes.len()));
    }

    /// Drops the first `n` bytes (answered requests), keeping the rest at the front. Once empty,
    /// a buffer larger than [`KEPT_CAPACITY`] is freed, so idle keep-alive connections hold
    /// little or nothing.
    fn consume(&mut self, n: usize) {
        self.bytes.drain(..n);
        if self.bytes.is_empty() && self.bytes.capacity() > KEPT_CAPACITY {
            self.bytes = Vec::new();
        }
    }
}

/// How long a connection waits for already-sent requests once shutdown begins.
const FINAL_READ: Duration = Duration::from_millis(50);

/// Why a read produced no bytes.
enum ReadEnd {
    TimedOut,
    Failed(std::io::Error),
}

/// Reads once into `inbuf`, giving up after `limit` (glommio's timer: see `linger_close` for why
/// not the socket timeout).
async fn read_within(
    stream: &mut TcpStream,
    inbuf: &mut ReadBuffer,
    limit: Duration,
) -> Result<usize, ReadEnd> {
    if limit.is_zero() {
        return Err(ReadEnd::TimedOut);
    }
    let read = async {
        read_chunk(stream, |bytes| inbuf.extend(bytes))
            .await
            .map_err(glommio::GlommioError::IoError)
    };
    match glommio::timer::timeout(limit, read).await {
        Ok(n) => Ok(n),
        Err(glommio::GlommioError::IoError(error)) if error.kind() == ErrorKind::TimedOut => {
            Err(ReadEnd::TimedOut)
        }
        Err(glommio::GlommioError::IoError(error)) => Err(ReadEnd::Failed(error)),
        Err(_) => Err(ReadEnd::TimedOut),
    }
}

/// Most bytes read and discarded while lingering.
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Longest wait for the client to stop sending while lingering.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);

/// Closes a connection whose client had sent more than we read. Closing with unread input makes
/// the kernel send a reset, which can destroy the response we just wrote before the client reads
/// it. So: stop writing, read and discard what still arrives (bounded in bytes and time), then
/// close.
async fn linger_close(stream: &mut TcpStream) {
    if stream.shutdown(std::net::Shutdown::Write).await.is_err() {
        return;
    }
    // Bounded by glommio's timer rather than the socket read timeout: glommio keeps a read
    // deadline armed after a read future is dropped, so changing the timeout here would not apply.
    let discard = async {
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            match read_chunk(stream, |_| {}).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
        Ok(())
    };
    let _ = glommio::timer::timeout(LINGER_TIMEOUT, discard).await;
}

fn protocol_error(error: ParseError) -> Response {
    let response = match error {
        ParseError::Malformed => {
            Response::error(400, "bad_request", "malformed request line or headers")
        }
        ParseError::HeadersTooLarge => Response::error(
            431,
            "headers_too_large",
            "request headers exceed 16 KiB or 64 lines",
        ),
        ParseError::LengthRequired => Response::error(
            411,
            "length_required",
            "a body needs a Content-Length; chunked bodies are not accepted",
        ),
        ParseError::BodyTooLarge => {
            Response::error(413, "payload_too_large", "request body exceeds 64 KiB")
        }
        ParseError::BadHost => Response::error(
            400,
            "bad_request",
            "an HTTP/1.1 request needs exactly one Host header (and no request may have two)",
        ),
        ParseError::DuplicateAuthorization => Response::error(
            400,
            "bad_request",
            "a request may carry at most one Authorization header",
        ),
        ParseError::ExpectationFailed => Response::error(
            417,
            "expectation_failed",
            "the only expectation understood is `Expect: 100-continue`",
        ),
    };
    response.closing()
}
