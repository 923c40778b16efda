//! Accepts client connections on core 0 and hands each to a core for its whole life.
//!
//! Placement is round robin over cores: connections are long-lived and requests are spread
//! over cores by key anyway, so the simplest fair choice. Over the connection limit a new
//! connection is closed at once (and logged); everyone else is unaffected.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::future;

use crate::limits::ACCEPT_RETRY_PAUSE_MS;
use crate::server::messages::CoreMsg;
use crate::server::runtime::CoreCtx;

pub async fn accept_loop(ctx: Rc<CoreCtx>, listener: glommio::net::TcpListener) {
    let mut next = 0usize;
    loop {
        let accepted = future::or(async { Some(listener.shared_accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                log::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
                continue;
            }
        };
        let open = ctx.node.connections.fetch_add(1, Ordering::Relaxed);
        if open >= ctx.node.max_connections {
            ctx.node.connections.fetch_sub(1, Ordering::Relaxed);
            log::warn!(
                "connection limit {} reached: closing a new connection",
                open
            );
            drop(stream.bind_to_executor());
            continue;
        }
        let target = next % ctx.peers.len();
        next = next.wrapping_add(1);
        if ctx.peers[target]
            .send_async(CoreMsg::Conn(stream))
            .await
            .is_err()
        {
            ctx.node.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
    log::debug!("core {}: stopped accepting", ctx.core);
}
