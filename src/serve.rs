//! `seckill serve`: resolve the config, prepare the host (memlock for io_uring), print dev-mode
//! credentials if needed, and run the node.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

use crate::auth::Auth;
use crate::config::{SecretsSource, ServeConfig};
use crate::feed::FeedHandle;
use crate::http::ConnLimits;
use crate::payment::Webhook;
use crate::sale::book::BookLimits;
use crate::shard::boot::{NodeOptions, NodeStores, ShardStart};
use crate::shard::discovery::DiscoverySettings;
use crate::shard::fds;
use crate::shard::runtime::{run_node, NodeError};
use crate::store::journal::compaction::Rebuild;
use crate::store::journal::recovery::{self, RecoveryError};
use crate::store::RedisSettings;

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be recovered or locked.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The order feed's publisher thread could not start.
    #[error("order feed: {0}")]
    Feed(std::io::Error),
}

/// glommio's default registered-buffer size per executor.
const DEFAULT_IO_MEMORY: usize = 10 << 20;

/// Runs the server with `config` until a shutdown signal.
pub fn serve(config: &ServeConfig) -> Result<(), ServeError> {
    let feed = match &config.events {
        Some(events) => {
            tracing::info!(url = %events.feed.url, stream = %events.feed.stream, "order feed: publishing to NATS JetStream");
            Some(FeedHandle::start(events.feed.clone(), config.shards).map_err(ServeError::Feed)?)
        }
        None => None,
    };
    if let Some(url) = &config.redis {
        if config.secrets_source == SecretsSource::DevGenerated {
            print_dev_credentials(config);
        }
        let settings = RedisSettings {
            url: url.clone(),
            prefix: config.redis_prefix.clone(),
            closed_orders_per_sale: config.closed_orders_per_sale,
            max_batch: config.redis_batch,
            pipeline: config.redis_pipeline,
            budget: config.redis_budget,
            unresponsive: config.redis_unresponsive,
            wait: config.redis_wait,
            retention: config.redis_retention,
        };
        tracing::info!(redis = %url, prefix = %config.redis_prefix, redis_wait = config.redis_wait.replicas, "cluster mode: state lives in redis");
        run_node(node_options(config, feed), NodeStores::Redis(settings))?;
        return Ok(());
    }
    let _lock = recovery::lock(&config.data_dir)?;
    // glommio opens directories with a relative path incorrectly (EBADF), so the journal always
    // works with an absolute one.
    let data_dir = std::fs::canonicalize(&config.data_dir).map_err(|source| RecoveryError::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    recovery::check_direct_io(&data_dir)?;
    let limits = BookLimits {
        closed_orders_per_sale: config.closed_orders_per_sale,
    };
    let started = std::time::Instant::now();
    let recovered = recovery::recover(&data_dir, config.shards, limits, config.events.is_some())?;
    for torn in &recovered.torn_tails {
        tracing::warn!(file = %torn.display(), "cut off a torn record at the end of the journal (crash mid-write)");
    }
    tracing::info!(
        data_dir = %data_dir.display(),
        events = recovered.events_replayed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        read_ms = recovered.timings.read_ms,
        replay_ms = recovered.timings.replay_ms,
        write_ms = recovered.timings.write_ms,
        "journal recovered"
    );
    release_freed_heap();
    let unpublished: usize = recovered.outboxes.iter().map(|outbox| outbox.len()).sum();
    if unpublished > 0 && config.events.is_none() {
        tracing::warn!(
            unpublished,
            "the journal holds order feed events not yet published; start with --events to deliver them"
        );
    }
    let starts = recovered
        .books
        .into_iter()
        .zip(recovered.outboxes)
        .zip(recovered.shard_dirs)
        .map(
            |((book, outbox), (journal_dir, journal_start))| ShardStart {
                book,
                outbox,
                journal_dir,
                journal_start,
                rebuild: Rebuild {
                    limits,
                    feed: config.events.is_some(),
                },
            },
        )
        .collect();
    if config.secrets_source == SecretsSource::DevGenerated {
        print_dev_credentials(config);
    }
    run_node(node_options(config, feed), NodeStores::Embedded(starts))?;
    Ok(())
}

/// What the node runs with, whichever store it uses. Raises RLIMIT_NOFILE (and caps
/// connections to it) and RLIMIT_MEMLOCK (or shrinks io_uring buffers to it) on the way.
fn node_options(config: &ServeConfig, feed: Option<FeedHandle>) -> NodeOptions {
    let fd_budget = fds::apply(config.shards, config.max_connections_per_shard);
    NodeOptions {
        listen: config.listen,
        shards: config.shards,
        backlog: config.backlog,
        conn_limits: ConnLimits {
            idle_timeout: config.idle_timeout,
            write_timeout: config.idle_timeout,
        },
        max_connections_per_shard: fd_budget.per_shard_cap,
        drain_timeout: config.drain_timeout,
        io_memory: io_memory_within_memlock(config.shards),
        durability: config.durability,
        segment_bytes: config.segment_bytes,
        cors: config.cors.clone(),
        auth: Auth::new(&config.admin_token, &config.token_secret)
            .with_max_token_ttl(config.max_token_ttl_secs)
            .with_payment_token(config.payment_token.as_deref())
            .with_webhook(
                config
                    .webhook_secret
                    .as_deref()
                    .map(|secret| Webhook::new(secret, config.webhook_tolerance_secs)),
            ),
        discovery: DiscoverySettings {
            lookups_per_sec: config.redis_lookups_per_sec,
            negative_ttl: config.redis_negative_ttl,
        },
        feed,
        outbox_max: config
            .events
            .as_ref()
            .map_or(usize::MAX, |events| events.outbox_max),
    }
}

/// io_uring registers each executor's I/O buffers as locked memory. Raise RLIMIT_MEMLOCK to
/// fit glommio's default if we may; otherwise shrink the buffers to fit the limit, so glommio
/// does not silently fall back to its slower unregistered path.
fn io_memory_within_memlock(shards: usize) -> usize {
    let needed = (DEFAULT_IO_MEMORY * shards) as u64;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
        return DEFAULT_IO_MEMORY;
    };
    if soft == RLIM_INFINITY || soft >= needed + (1 << 20) {
        return DEFAULT_IO_MEMORY;
    }
    if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok() {
        tracing::debug!("raised RLIMIT_MEMLOCK to infinity for io_uring buffers");
        return DEFAULT_IO_MEMORY;
    }
    let target = needed + (1 << 20);
    if hard >= target && setrlimit(Resource::RLIMIT_MEMLOCK, target, hard).is_ok() {
        return DEFAULT_IO_MEMORY;
    }
    // Leave 1 MiB of the limit for everything else that locks memory.
    let per_shard = (soft.saturating_sub(1 << 20) / shards.max(1) as u64) as usize;
    tracing::warn!(
        memlock_bytes = soft,
        io_memory_bytes = per_shard,
        "RLIMIT_MEMLOCK is low and cannot be raised; shrinking io_uring buffers to fit (set LimitMEMLOCK=infinity)"
    );
    per_shard.max(64 << 10)
}

fn print_dev_credentials(config: &ServeConfig) {
    let auth = Auth::new(&config.admin_token, &config.token_secret);
    let expires = crate::clock::now_ms() / 1000 + 3600;
    let shopper = auth.mint("alice", expires);
    let base = format!("http://{}", config.listen);
    // A SKU of its own per run: the data dir outlives the run, and a sale that has started
    // cannot be replaced, so a fixed SKU's PUT would answer 409 sale_exists from the second run.
    let sku = format!("try-{:x}", crate::clock::now_ms());
    eprintln!(
        "\nseckill dev mode: SECKILL_ADMIN_TOKEN and SECKILL_TOKEN_SECRET are not set, so these were generated for this run only.\n\
         \n  SECKILL_ADMIN_TOKEN={admin}\n  SECKILL_TOKEN_SECRET={secret}\n\
         \nTry it:\n\
         \n  curl -X PUT {base}/v1/sales/{sku} -H 'Authorization: Bearer {admin}' -H 'Content-Type: application/json' \\\n    -d '{{\"name\":\"Moutai 53%\",\"stock\":1000,\"starts_at\":0,\"ends_at\":4102444800000}}'\
         \n  curl -X POST {base}/v1/sales/{sku}/purchase -H 'Authorization: Bearer {shopper}'\n\
         \nOr buy from the shopper page, signed in as alice (the token travels in the fragment):\n\
         \n  {base}/shop/{sku}#token={shopper}\n",
        admin = config.admin_token,
        secret = config.token_secret,
    );
}

/// Hands the heap's free pages back to the system. Recovery's read and replay buffers are freed
/// by now, but glibc keeps freed memory in its arenas: after a million orders that was about a
/// third of the process (`benches/restart.sh`: 287 MiB resident, 201 MiB after the trim). Called
/// once at boot, before any connection: the trim locks each arena while it walks it.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
