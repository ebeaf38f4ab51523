//! Request ids: the client's `X-Request-Id` when it is safe to echo, otherwise one generated here,
//! unique per process without coordination between shards.

use std::cell::Cell;

/// Longest client-supplied id echoed back; longer ones are replaced.
const MAX_CLIENT_ID: usize = 128;
/// Generated ids: 8 hex digits of a per-thread random prefix, `-`, 16 hex digits of a counter.
const GENERATED_LEN: usize = 25;

thread_local! {
    /// Random per shard thread, so ids from different shards (and restarts) do not collide.
    static PREFIX: u32 = rand::random();
    /// Ids generated on this thread so far.
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// The id of one request.
#[derive(Debug, Clone, Copy)]
pub enum RequestId<'a> {
    /// The client's own `X-Request-Id`.
    Client(&'a str),
    /// Generated because the client sent none (or an unusable one).
    Generated([u8; GENERATED_LEN]),
}

impl<'a> RequestId<'a> {
    /// The client's id if it is 1 to 128 visible ASCII characters (it goes into a header and into
    /// logs), otherwise a fresh one.
    pub fn for_request(client: Option<&'a [u8]>) -> Self {
        let usable = client.filter(|id| {
            !id.is_empty() && id.len() <= MAX_CLIENT_ID && id.iter().all(u8::is_ascii_graphic)
        });
        match usable.and_then(|id| std::str::from_utf8(id).ok()) {
            Some(id) => RequestId::Client(id),
            None => RequestId::generate(),
        }
    }

    /// A new id, unique within this process.
    pub fn generate() -> Self {
        let prefix = PREFIX.with(|prefix| *prefix);
        let counter = NEXT.with(|next| {
            let value = next.get();
            next.set(value.wrapping_add(1));
            value
        });
        let mut id = [b'-'; GENERATED_LEN];
        write_hex(&mut id[..8], u64::from(prefix));
        write_hex(&mut id[9..], counter);
        RequestId::Generated(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match self {
            RequestId::Client(id) => id,
            // Only hex digits and `-` are ever written into it.
            RequestId::Generated(id) => std::str::from_utf8(id).unwrap_or("-"),
        }
    }
}

/// Writes `value` as lowercase hex filling `out`, most significant digit first.
fn write_hex(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_usable_client_ids_and_replaces_others() {
        assert_eq!(RequestId::for_request(Some(b"abc-123")).as_str(), "abc-123");
        for unusable in [&b""[..], b"has space", b"\x01", &[b'a'; 129][..]] {
            let id = RequestId::for_request(Some(unusable));
            assert!(matches!(id, RequestId::Generated(_)), "{unusable:?}");
        }
    }

    #[test]
    fn generated_ids_are_distinct_hex() {
        let first = RequestId::generate();
        let second = RequestId::generate();
        assert_ne!(first.as_str(), second.as_str());
        assert_eq!(first.as_str().len(), GENERATED_LEN);
        assert!(first
            .as_str()
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
