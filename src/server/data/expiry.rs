//! One core's expiry sweep: keys past their expiry become tombstones of their versions.
//!
//! Owns: the timer. Every `EXPIRY_SWEEP_INTERVAL_MS` it asks the shard to turn at most
//! `EXPIRY_SWEEP_KEYS_MAX` due keys into tombstones (`storage::map::Map::expire_due`: an index
//! lookup, no scan), freeing their values' memory; compaction purges the tombstones later, by
//! the same rules as deletes. Never decides what has expired (reads already hide an expired
//! key the moment it expires; this only reclaims memory), and never writes the WAL: a restart
//! replays the expiring values and the sweep turns them into tombstones again.

use std::rc::Rc;
use std::time::Duration;

use crate::limits::{EXPIRY_SWEEP_INTERVAL_MS, EXPIRY_SWEEP_KEYS_MAX};
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;

/// Sweep until shutdown.
pub async fn run(ctx: Rc<CoreCtx>) {
    let every = Duration::from_millis(EXPIRY_SWEEP_INTERVAL_MS);
    loop {
        futures_lite::future::or(glommio::timer::sleep(every), ctx.shutdown.wait()).await;
        if ctx.shutdown.is_set() {
            return;
        }
        let n = ctx.shard.expire_due(wall_clock_ms(), EXPIRY_SWEEP_KEYS_MAX);
        if n > 0 {
            ctx.metrics.expired(n as u64);
            log::debug!("core {}: {n} expired keys turned into tombstones", ctx.core);
        }
    }
}
