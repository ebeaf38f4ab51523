//! A minimal keep-alive HTTP/1.1 client connection: one request in flight, responses framed by
//! `Content-Length` and bounded in size.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

/// Largest accepted response head.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest accepted response body.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;
/// Most response header lines parsed.
const MAX_HEADERS: usize = 32;

/// Why an exchange produced no usable response. The connection must not be reused after one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection before the response was complete.
    #[error("connection closed before a complete response")]
    Closed,
    /// The response head is not valid HTTP/1.x.
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// The response head is larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// `Content-Length` is larger than [`MAX_BODY_BYTES`] or not a number.
    #[error("response body larger than {MAX_BODY_BYTES} bytes or invalid Content-Length")]
    BadLength,
    /// The response is not framed by `Content-Length` (chunked or read-until-close).
    #[error("response without Content-Length")]
    Unframed,
    /// More bytes arrived than the response is long.
    #[error("unexpected bytes after the response")]
    Trailing,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// Status code.
    pub status: u16,
    /// Length of the head, including the blank line.
    pub head_len: usize,
    /// Length of the body from `Content-Length`.
    pub body_len: usize,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Parses the response head at the start of `buf`: `Ok(None)` until it is complete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(ExchangeError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(ExchangeError::Malformed(error)),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(ExchangeError::HeadTooLarge);
    }
    let status = response.code.unwrap_or(0);
    let mut body_len = None;
    let mut close = response.version == Some(0);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse::<usize>().ok())
                .filter(|&length| length <= MAX_BODY_BYTES)
                .ok_or(ExchangeError::BadLength)?;
            if body_len.is_some_and(|seen| seen != length) {
                return Err(ExchangeError::BadLength);
            }
            body_len = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ExchangeError::Unframed);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    let body_len = match body_len {
        Some(length) => length,
        // Responses that never have a body.
        None if status == 204 || status == 304 => 0,
        None => return Err(ExchangeError::Unframed),
    };
    Ok(Some(Head {
        status,
        head_len,
        body_len,
        close,
    }))
}

/// One client connection.
pub(crate) struct Connection {
    stream: TcpStream,
    /// Receive buffer; its length is its usable size, `filled` says how much holds data.
    buf: Vec<u8>,
    body: Range<usize>,
}

/// The useful part of a response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    /// Status code.
    pub status: u16,
    /// The connection must be closed now.
    pub close: bool,
}

impl Connection {
    /// Connects to the first of `addrs` that accepts within `timeout` each.
    pub async fn connect(addrs: &[SocketAddr], timeout: Duration) -> std::io::Result<Self> {
        let mut last = std::io::Error::new(ErrorKind::InvalidInput, "no address to connect to");
        for addr in addrs {
            match TcpStream::connect_timeout(*addr, timeout).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(Self {
                        stream,
                        buf: vec![0; MAX_HEAD_BYTES + 1],
                        body: 0..0,
                    });
                }
                Err(error) => last = error.into(),
            }
        }
        Err(last)
    }

    /// Sends `request` and reads its response. Cancel-safe only in the sense that a dropped
    /// exchange leaves the connection unusable: drop the connection too.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Reply, ExchangeError> {
        self.stream.write_all(request).await?;
        let mut filled = 0;
        let mut head = None;
        loop {
            // Before the head is parsed read as much as the head may be; after, exactly the rest.
            let limit = match head {
                None => MAX_HEAD_BYTES + 1,
                Some(Head {
                    head_len, body_len, ..
                }) => head_len + body_len,
            };
            if self.buf.len() < limit {
                self.buf.resize(limit, 0);
            }
            let read = self.stream.read(&mut self.buf[filled..limit]).await?;
            if read == 0 {
                return Err(ExchangeError::Closed);
            }
            filled += read;
            if head.is_none() {
                head = parse_head(&self.buf[..filled])?;
            }
            if let Some(parsed) = head {
                let end = parsed.head_len + parsed.body_len;
                if filled > end {
                    return Err(ExchangeError::Trailing);
                }
                if filled == end {
                    self.body = parsed.head_len..end;
                    if self.buf.len() > 2 * (MAX_HEAD_BYTES + 1) {
                        // Do not keep a large body's buffer around.
                        self.buf.truncate(MAX_HEAD_BYTES + 1);
                        self.buf.shrink_to_fit();
                    }
                    return Ok(Reply {
                        status: parsed.status,
                        close: parsed.close,
                    });
                }
            }
        }
    }

    /// The body of the last response, mutable because simd-json parses in place.
    pub fn body_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.body.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_by_content_length() {
        let response = b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        let head = parse_head(response).expect("valid").expect("complete");
        assert_eq!(
            head,
            Head {
                status: 409,
                head_len: response.len() - 2,
                body_len: 2,
                close: false
            }
        );
        assert_eq!(parse_head(&response[..20]).expect("valid"), None);
        let closing =
            parse_head(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .expect("valid")
                .expect("complete");
        assert!(closing.close);
        let empty = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(empty.body_len, 0);
        let old = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(old.close);
    }

    #[test]
    fn oversized_or_unframed_responses_are_errors() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert!(matches!(
            parse_head(big.as_bytes()),
            Err(ExchangeError::BadLength)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(ExchangeError::BadLength)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ExchangeError::Unframed)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ExchangeError::Unframed)
        ));
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 1, b'a');
        assert!(matches!(
            parse_head(&huge),
            Err(ExchangeError::HeadTooLarge)
        ));
        assert!(matches!(
            parse_head(b"garbage\r\n\r\n"),
            Err(ExchangeError::Malformed(_))
        ));
    }
}
