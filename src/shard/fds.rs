//! The node's file-descriptor budget. Connections may use only what `RLIMIT_NOFILE` leaves after
//! a reserve, so the journal (segment rollover, snapshots, directory syncs), Redis reconnects and
//! the runtime's own rings and threads never meet `EMFILE`. `serve` raises the soft limit toward
//! the hard one when the configured connections do not fit, and otherwise caps connections per
//! shard; `seckill doctor` reports the same plan.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// Descriptors kept for the process as a whole: stdio, logs, the lock file, the signal and main
/// threads, recovery's leftovers, the probe sockets of `doctor`.
pub const RESERVED_BASE: u64 = 128;
/// Descriptors kept per shard: its io_uring rings and eventfd, its listener, the journal's
/// segment, a snapshot being written and directories being synced, and its Redis connections.
pub const RESERVED_PER_SHARD: u64 = 64;
/// Connections a shard may hold open at once only to answer `503 overloaded` while at its cap.
/// Beyond this, excess connections are closed without an answer.
pub const REFUSALS_PER_SHARD: usize = 16;

/// What the node may open, and how the soft limit was (or would be) set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` the node runs with.
    pub soft: u64,
    /// The hard limit, the most the soft limit may be raised to.
    pub hard: u64,
    /// The soft limit found at start, when it was raised.
    pub raised_from: Option<u64>,
    /// Descriptors the configuration wants: every shard's connection cap plus the reserve.
    pub wanted: u64,
    /// Connections each shard accepts before answering `503 overloaded`.
    pub per_shard_cap: usize,
}

impl FdBudget {
    /// Whether the configured `max_connections_per_shard` had to be lowered to fit.
    pub fn is_capped(&self, max_connections_per_shard: usize) -> bool {
        self.per_shard_cap < max_connections_per_shard
    }
}

/// Descriptors reserved for everything but client connections.
pub fn reserve(shards: usize) -> u64 {
    RESERVED_BASE + (RESERVED_PER_SHARD + REFUSALS_PER_SHARD as u64) * shards as u64
}

/// The plan for limits `soft`/`hard`: raise the soft limit to what the configuration wants, or
/// as far toward the hard limit as it goes, and cap connections to what then fits.
pub fn plan(shards: usize, max_connections_per_shard: usize, soft: u64, hard: u64) -> FdBudget {
    let shards = shards.max(1);
    let reserve = reserve(shards);
    let wanted = (max_connections_per_shard as u64)
        .saturating_mul(shards as u64)
        .saturating_add(reserve);
    let target = if soft == RLIM_INFINITY || soft >= wanted {
        soft
    } else if hard == RLIM_INFINITY || hard >= wanted {
        wanted
    } else {
        hard
    };
    let fits = target.saturating_sub(reserve) / shards as u64;
    // At least one connection per shard, so a badly limited node still answers something.
    let per_shard_cap = usize::try_from(fits)
        .unwrap_or(usize::MAX)
        .clamp(1, max_connections_per_shard.max(1));
    FdBudget {
        soft: target,
        hard,
        raised_from: (target != soft).then_some(soft),
        wanted,
        per_shard_cap,
    }
}

/// Applies [`plan`] to this process: raises the soft limit if needed and allowed, and warns once
/// when connections must be capped below the configuration.
pub fn apply(shards: usize, max_connections_per_shard: usize) -> FdBudget {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        // Unknown limits: trust the configuration, as before.
        return FdBudget {
            soft: RLIM_INFINITY,
            hard: RLIM_INFINITY,
            raised_from: None,
            wanted: 0,
            per_shard_cap: max_connections_per_shard,
        };
    };
    let mut budget = plan(shards, max_connections_per_shard, soft, hard);
    if let Some(from) = budget.raised_from {
        if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, budget.soft, hard) {
            tracing::warn!(%error, "could not raise RLIMIT_NOFILE");
            budget = plan(shards, max_connections_per_shard, soft, soft);
        } else {
            tracing::info!(from, to = budget.soft, "raised the soft RLIMIT_NOFILE");
        }
    }
    if budget.is_capped(max_connections_per_shard) {
        tracing::warn!(
            nofile = budget.soft,
            hard = budget.hard,
            wanted = budget.wanted,
            max_connections_per_shard,
            effective_per_shard = budget.per_shard_cap,
            "RLIMIT_NOFILE cannot cover shards x max_connections_per_shard plus the descriptor reserve; \
             capping connections per shard (raise LimitNOFILE to lift the cap)"
        );
    }
    budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_fits_is_left_alone() {
        let budget = plan(2, 100, 1 << 20, 1 << 20);
        assert_eq!(budget.soft, 1 << 20);
        assert_eq!(budget.raised_from, None);
        assert_eq!(budget.per_shard_cap, 100);
    }

    #[test]
    fn the_soft_limit_is_raised_only_as_far_as_needed() {
        let wanted = 2 * 10_000 + reserve(2);
        let budget = plan(2, 10_000, 1024, 1 << 20);
        assert_eq!(budget.soft, wanted);
        assert_eq!(budget.raised_from, Some(1024));
        assert_eq!(budget.per_shard_cap, 10_000);
    }

    #[test]
    fn under_the_hard_limit_connections_are_capped() {
        // The defaults on a host with nofile 20,000: 2 x 10,000 does not fit with the reserve.
        let budget = plan(2, 10_000, 20_000, 20_000);
        assert_eq!(budget.soft, 20_000);
        assert_eq!(budget.per_shard_cap as u64, (20_000 - reserve(2)) / 2);
        assert!(budget.is_capped(10_000));
        assert!(2 * budget.per_shard_cap as u64 + reserve(2) <= 20_000);
    }

    #[test]
    fn a_tiny_limit_still_leaves_one_connection() {
        assert_eq!(plan(4, 10_000, 64, 64).per_shard_cap, 1);
    }
}
