//! Accepts client connections on core 0 and hands each to a core for its whole life.
//!
//! Placement is round robin over cores: connections are long-lived and requests are spread
//! over cores by key anyway, so the simplest fair choice. Over the connection limit a new
//! connection may only take the slot of one that has not authenticated (`admission`); past
//! that it is closed at once (and logged); everyone else is unaffected.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::future;

use crate::limits::ACCEPT_RETRY_PAUSE_MS;
use crate::server::data::messages::CoreMsg;
use crate::server::front::admission::unadmitted_max;
use crate::server::runtime::CoreCtx;

/// The next accepted connection, or `None` once the node shuts down. A failed accept (e.g.
/// EMFILE) is logged and retried after `ACCEPT_RETRY_PAUSE_MS`.
pub async fn next_accepted<S, F>(
    ctx: &CoreCtx,
    what: &str,
    mut accept: impl FnMut() -> F,
) -> Option<S>
where
    F: std::future::Future<Output = glommio::Result<S, ()>>,
{
    loop {
        let accepted = future::or(async { Some(accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await?;
        match accepted {
            Ok(s) => return Some(s),
            Err(e) => {
                log::warn!("{what}: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
            }
        }
    }
}

pub async fn accept_loop(ctx: Rc<CoreCtx>, listener: glommio::net::TcpListener) {
    let mut next = 0usize;
    while let Some(stream) = next_accepted(&ctx, "clients", || listener.shared_accept()).await {
        let open = ctx.node.connections.fetch_add(1, Ordering::Relaxed);
        // Past the limit a connection may still take an unauthenticated one's slot (its core
        // evicts one or closes it); past that too, it is closed here.
        let cores = ctx.peers.len();
        let slack = unadmitted_max(ctx.node.max_connections, cores) * cores;
        if open >= ctx.node.max_connections + slack {
            ctx.node.connections.fetch_sub(1, Ordering::Relaxed);
            log::warn!(
                "connection limit {} reached: closing a new connection",
                ctx.node.max_connections
            );
            drop(stream.bind_to_executor());
            continue;
        }
        let over_limit = open >= ctx.node.max_connections;
        let target = next % cores;
        next = next.wrapping_add(1);
        if ctx.peers[target]
            .send_async(CoreMsg::Conn { stream, over_limit })
            .await
            .is_err()
        {
            ctx.node.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
    log::debug!("core {}: stopped accepting", ctx.core);
}
