//! Before any load is sent: does the sale exist? A run against a SKU nobody created would
//! otherwise spend its whole duration on 404s and report them as the server's answer.
//!
//! One blocking `GET /v1/sales/{sku}` per target, bounded by the run's timeout. A target that
//! cannot be reached is left to the run, which reports its connect errors as it always has; only
//! a clear 404 refuses the run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::options::Target;
use super::LoadError;

/// Longest response head read; the sale's JSON is well under it.
const MAX_RESPONSE: usize = 16 << 10;

/// Refuses the run if any reachable target answers that `sku` has no sale.
pub(crate) fn sale_exists(
    targets: &[Target],
    sku: &str,
    timeout: Duration,
) -> Result<(), LoadError> {
    for target in targets {
        if status(target, timeout) == Some(404) {
            return Err(LoadError::UnknownSale {
                url: target.url.clone(),
                sku: sku.to_owned(),
            });
        }
    }
    Ok(())
}

/// The status `target` answers the sale's GET with, or `None` if it could not be had within
/// `timeout` (the whole exchange, so a server that drips its answer cannot stall the start).
fn status(target: &Target, timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    };
    // Each address gets what is left of the one deadline, not a whole timeout of its own.
    let mut stream = target
        .addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, left()?).ok())?;
    stream.set_write_timeout(Some(left()?)).ok()?;
    stream.write_all(&target.sale_request).ok()?;
    let mut buf = vec![0u8; MAX_RESPONSE];
    let mut filled = 0;
    while filled < buf.len() {
        stream.set_read_timeout(Some(left()?)).ok()?;
        let read = stream.read(&mut buf[filled..]).ok()?;
        if read == 0 {
            break;
        }
        filled += read;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = response.parse(&buf[..filled]) {
            return response.code;
        }
    }
    None
}
