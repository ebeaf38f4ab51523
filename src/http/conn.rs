//! One HTTP/1.1 connection: keep-alive, pipelining (answered in order, written in one batch),
//! idle and write timeouts, bounded buffers, and a prompt exit on shutdown.

use std::future::Future;
use std::io::ErrorKind;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::request::{parse, ParseError, Parsed, Request, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use super::request_id::RequestId;
use super::response::Response;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// Responses composed before they are written, even when many pipelined requests are buffered:
/// a read of small requests whose answers are large (`/metrics`) must not grow the output without
/// bound.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;
/// Upper bound on the read buffer: one maximal request plus one read's worth of the next.
const MAX_BUFFERED: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES + READ_CHUNK;

/// Serves parsed requests. Implemented by the API.
#[allow(async_fn_in_trait)]
pub trait Handler {
    /// Answers one request. Never fails: every failure is an error response.
    async fn handle(&self, request: &Request<'_>, request_id: &RequestId<'_>) -> Response;

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
    let mut inbuf = ReadBuffer::new();
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // When the first byte of the request being assembled arrived; `None` between requests.
    let mut request_started: Option<Instant> = None;
    loop {
        let mut consumed = 0;
        let mut close = false;
        // Set when the output grew past its bound with requests still buffered: write, then
        // answer the rest before reading more.
        let mut more = false;
        while !close && !more {
            match parse(&inbuf.data()[consumed..]) {
                Ok(Parsed::Complete(request, used)) => {
                    let request_id = RequestId::for_request(request.request_id);
                    let mut response = handler.handle(&request, &request_id).await;
                    if !request.keep_alive || handler.draining() {
                        response.close = true;
                    }
                    close = response.close;
                    response.write_to(&mut out, shard_header, &request_id);
                    consumed += used;
                    more = out.len() >= MAX_PENDING_OUTPUT;
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
        if consumed > 0 {
            // A pipelined remainder is the start of the next request.
            request_started = (!inbuf.is_empty()).then(Instant::now);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
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
                let read = stream.read(inbuf.spare());
                match select(pin!(read), pin!(shutdown.clone())).await {
                    Either::Left((Ok(n), _)) => Ok(n),
                    Either::Left((Err(error), _)) if error.kind() == ErrorKind::TimedOut => {
                        Err(ReadEnd::TimedOut)
                    }
                    Either::Left((Err(error), _)) => Err(ReadEnd::Failed(error)),
                    Either::Right(((), _)) => {
                        // Requests may already sit in the socket, not yet polled: answer those
                        // (the response will close), and only then close.
                        match read_within(&mut stream, inbuf.spare(), FINAL_READ).await {
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
                read_within(&mut stream, inbuf.spare(), left).await
            }
        };
        match outcome {
            Ok(0) => return Ok(()),
            Ok(n) => {
                inbuf.commit(n);
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

/// Bytes read from a connection and not yet consumed. Memory is zeroed only when the buffer
/// grows, so a read does not first pay to clear the chunk it is about to overwrite (that memset
/// was 1.75% of the sold-out path's CPU).
struct ReadBuffer {
    bytes: Vec<u8>,
    filled: usize,
}

impl ReadBuffer {
    fn new() -> Self {
        Self {
            bytes: vec![0; READ_CHUNK],
            filled: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }

    fn len(&self) -> usize {
        self.filled
    }

    fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Drops the first `n` bytes (answered requests), keeping the rest at the front. Once empty,
    /// a buffer that one large request grew goes back to its usual size, so idle keep-alive
    /// connections hold one chunk each.
    fn consume(&mut self, n: usize) {
        self.bytes.copy_within(n..self.filled, 0);
        self.filled -= n;
        if self.filled == 0 && self.bytes.len() > 2 * READ_CHUNK {
            self.bytes.truncate(READ_CHUNK);
            self.bytes.shrink_to_fit();
        }
    }

    /// Room for one read (one chunk), after the bytes held. One chunk at a time bounds how many
    /// pipelined requests a single read can bring in.
    fn spare(&mut self) -> &mut [u8] {
        let end = self.filled + READ_CHUNK;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        &mut self.bytes[self.filled..end]
    }

    /// Counts `n` more bytes, just read into [`ReadBuffer::spare`].
    fn commit(&mut self, n: usize) {
        self.filled += n;
    }
}

/// How long a connection waits for already-sent requests once shutdown begins.
const FINAL_READ: Duration = Duration::from_millis(50);

/// Why a read produced no bytes.
enum ReadEnd {
    TimedOut,
    Failed(std::io::Error),
}

/// Reads once, giving up after `limit` (glommio's timer: see `linger_close` for why not the
/// socket timeout).
async fn read_within(
    stream: &mut TcpStream,
    buf: &mut [u8],
    limit: Duration,
) -> Result<usize, ReadEnd> {
    if limit.is_zero() {
        return Err(ReadEnd::TimedOut);
    }
    let read = async {
        stream
            .read(buf)
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
        let mut sink = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
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
    };
    response.closing()
}
