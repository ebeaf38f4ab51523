//! One HTTP/1.1 connection: keep-alive, pipelining (answered in order, written in one batch),
//! idle and write timeouts, bounded buffers, and a prompt exit on shutdown.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::request::{parse, ParseError, Parsed, Request, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use super::response::Response;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// Upper bound on the read buffer: one maximal request plus one read's worth of the next.
const MAX_BUFFERED: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES + READ_CHUNK;

/// Serves parsed requests. Implemented by the API.
#[allow(async_fn_in_trait)]
pub trait Handler {
    /// Answers one request. Never fails: every failure is an error response.
    async fn handle(&self, request: &Request<'_>) -> Response;

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
    let mut inbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        let mut consumed = 0;
        let mut close = false;
        while !close {
            match parse(&inbuf[consumed..]) {
                Ok(Parsed::Complete(request, used)) => {
                    let mut response = handler.handle(&request).await;
                    if !request.keep_alive || handler.draining() {
                        response.close = true;
                    }
                    close = response.close;
                    response.write_to(&mut out, shard_header, valid_request_id(&request));
                    consumed += used;
                }
                Ok(Parsed::Partial) => break,
                Err(error) => {
                    protocol_error(error).write_to(&mut out, shard_header, None);
                    close = true;
                }
            }
        }
        let unread = inbuf.len() > consumed;
        inbuf.drain(..consumed);
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
        let filled = inbuf.len();
        if filled >= MAX_BUFFERED {
            // Unreachable while the parser enforces its limits; kept as a hard stop on memory.
            return Ok(());
        }
        inbuf.resize(filled + READ_CHUNK, 0);
        let read = stream.read(&mut inbuf[filled..]);
        let outcome = match select(pin!(read), pin!(shutdown.clone())).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right(((), _)) => {
                // The client may have requests in flight towards us; see `linger_close`.
                linger_close(&mut stream).await;
                return Ok(());
            }
        };
        match outcome {
            Ok(0) => return Ok(()),
            Ok(n) => inbuf.truncate(filled + n),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                inbuf.truncate(filled);
                if !inbuf.is_empty() {
                    let timeout =
                        Response::error(408, "request_timeout", "request not completed in time");
                    timeout.closing().write_to(&mut out, shard_header, None);
                    stream.write_all(&out).await?;
                }
                return Ok(());
            }
            Err(error) => return Err(error),
        }
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

/// The client's `X-Request-Id`, echoed only when it is short printable ASCII (it goes into a
/// header and into logs).
fn valid_request_id<'a>(request: &Request<'a>) -> Option<&'a [u8]> {
    request
        .request_id
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.iter().all(|b| b.is_ascii_graphic()))
}
