//! Start and stop, many times: every start becomes ready and every SIGTERM ends in a clean exit.
//! A bounded version of `benches/startstop.sh` (1,000 starts), which is where the startup hang
//! (about one start in 255 never became ready: a glommio wake-up lost before any timer existed)
//! was reproduced; see `shard::boot::WAKE_FLOOR`.

mod common;

use common::*;

const STARTS: usize = 50;
const SHARDS: usize = 2;

#[test]
fn fifty_starts_all_become_ready_and_stop_cleanly() {
    let data_dir = fresh_data_dir();
    {
        // Sales in the data dir, so every start republishes them across the mesh before ready.
        let server = Server::start_in(&data_dir, SHARDS, &[]);
        for n in 0..8 {
            server.open_sale(&format!("life-{n}"), 10, 1);
        }
    }
    for start in 0..STARTS {
        // `start_in` panics, with the server's output, if it is not ready within its deadline.
        let mut server = Server::start_in(&data_dir, SHARDS, &[]);
        let mut client = server.client();
        assert_eq!(client.get_sale("life-7")["stock"], 10, "start {start}");
        drop(client);
        let status = server.terminate();
        assert!(
            status.success(),
            "start {start}: exit {status}; output:\n{}",
            server.log()
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
