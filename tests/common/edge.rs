//! Waiting for a sale to open everywhere: a node's shards learn sales through their edge
//! replicas (from the owner shard, or by polling Redis in cluster mode), and a loaded machine
//! may take a while. Tests wait for the fact itself instead of sleeping a guessed period.

use std::time::Duration;

use super::{poll, tok, Server};

/// Waits until every shard of every node in `nodes` admits purchases of `sku` at its edge,
/// giving up after `bound`. The probe asks for quantity 0, which no sale accepts: a shard's edge
/// answers 404 (sale unknown) or 425 (not started) until its replica knows the sale is open, and
/// after that the request fails validation with 400, changing nothing.
#[track_caller]
pub fn wait_until_open(nodes: &[&Server], sku: &str, bound: Duration) {
    let auth = format!("Bearer {}", tok("open-probe"));
    for node in nodes {
        // One shard at a time, each on a connection made when its turn comes, so no connection
        // waits idle (past the server's idle timeout, on a loaded machine) for another shard.
        for shard in 0..node.shards {
            let mut client = node.client_on_shard(shard);
            let mut last = None;
            let open = poll(bound, || {
                let r = client.request(
                    "POST",
                    &format!("/v1/sales/{sku}/purchase"),
                    &[("Authorization", &auth)],
                    Some(r#"{"quantity":0}"#),
                );
                assert_ne!(r.status, 201, "the open probe bought something: {r}");
                let known = r.status != 404 && r.status != 425;
                last = Some(r);
                known.then_some(())
            });
            assert!(
                open.is_some(),
                "sale {sku} not open at a shard of node {} within {bound:?}; last probe: {last:?}",
                node.port
            );
        }
    }
}
