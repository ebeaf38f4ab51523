//! `seckill orders export`: a SKU's orders from a running node, as JSON lines or CSV on stdout.
//!
//! It pages through `GET /v1/sales/{sku}/orders` (admin token) with the `next` cursor, one plain
//! HTTP/1.1 request per page on a fresh loopback-or-LAN connection, so it needs nothing but the
//! node's address. Each order is written once, in id (creation) order. JSON lines are the
//! server's order objects unchanged; CSV has a header and quotes fields as RFC 4180 says.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use simd_json::prelude::*;
use simd_json::OwnedValue;

/// Largest response accepted: a page of 1000 orders is far below this.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Connect, read and write deadline of each request.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The CSV columns; `amount` is empty for orders that carry none.
pub const CSV_COLUMNS: [&str; 8] = [
    "order_id",
    "sku",
    "user_id",
    "quantity",
    "status",
    "created_at",
    "expires_at",
    "amount",
];

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

/// What to export, from where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// `HOST:PORT` of a node.
    pub addr: String,
    /// The admin token.
    pub admin_token: String,
    /// The SKU.
    pub sku: String,
    /// Only this status (`pending`, `paid`, `cancelled`, `expired`).
    pub status: Option<String>,
    /// Output format.
    pub format: Format,
    /// Orders per request, 1..=1000 (the endpoint's maximum).
    pub page_size: usize,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The node could not be reached or the output could not be written.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The node answered something other than a page.
    #[error("{0}")]
    Server(String),
}

/// Writes every order of `options.sku` to `out`; returns how many.
pub fn export(options: &ExportOptions, out: &mut impl Write) -> Result<u64, ExportError> {
    if options.format == Format::Csv {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    let mut after: Option<String> = None;
    let mut written = 0;
    loop {
        let mut path = format!(
            "/v1/sales/{}/orders?limit={}",
            options.sku, options.page_size
        );
        if let Some(status) = &options.status {
            path.push_str(&format!("&status={status}"));
        }
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let mut body = get(&options.addr, &path, Some(&options.admin_token))?;
        let page = simd_json::to_owned_value(&mut body)
            .map_err(|e| ExportError::Server(format!("the page is not JSON: {e}")))?;
        let orders = page
            .get("orders")
            .and_then(ValueAsArray::as_array)
            .ok_or_else(|| ExportError::Server("the page has no `orders`".into()))?;
        for order in orders {
            match options.format {
                Format::Jsonl => writeln!(out, "{}", order.encode())?,
                Format::Csv => writeln!(out, "{}", csv_row(order))?,
            }
            written += 1;
        }
        match page.get("next").and_then(ValueAsScalar::as_str) {
            Some(next) if after.as_deref() != Some(next) => after = Some(next.to_owned()),
            Some(_) => return Err(ExportError::Server("`next` did not move".into())),
            None => break,
        }
    }
    out.flush()?;
    Ok(written)
}

/// One CSV line of `order`, in [`CSV_COLUMNS`] order.
fn csv_row(order: &OwnedValue) -> String {
    let fields: Vec<String> = CSV_COLUMNS
        .iter()
        .map(|column| match order.get(*column) {
            None => String::new(),
            Some(value) => match value.as_str() {
                Some(text) => csv_field(text),
                None => csv_field(&value.encode()),
            },
        })
        .collect();
    fields.join(",")
}

/// RFC 4180: a field with a comma, quote, CR or LF is quoted, its quotes doubled.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The body of a `200` answer to `GET path`, one request on its own connection, with `token` as
/// its bearer credential if given (the lottery's verifier reads public endpoints).
pub(crate) fn get(addr: &str, path: &str, token: Option<&str>) -> Result<Vec<u8>, ExportError> {
    let mut stream = connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(ExportError::Server("the answer is too large".into()));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(&raw) {
        Ok(httparse::Status::Complete(head)) => head,
        _ => return Err(ExportError::Server("malformed HTTP answer".into())),
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = raw.get(head..).unwrap_or_default();
    if length != Some(body.len()) {
        return Err(ExportError::Server("truncated HTTP answer".into()));
    }
    let status = response.code.unwrap_or(0);
    if status != 200 {
        return Err(ExportError::Server(format!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(body)
        )));
    }
    Ok(body.to_vec())
}

fn connect(addr: &str) -> Result<TcpStream, ExportError> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for target in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&target, TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(
        || ExportError::Server(format!("{addr} resolves to no address")),
        ExportError::Io,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
