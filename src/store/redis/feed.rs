//! The subscriber behind [`super::RedisStore`]'s revocation feed: one pub/sub connection,
//! remade after any failure. Messages lost while it is down are made up for by the gateway's
//! periodic resync (`Store::live_revocations`), not here.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{CONNECT_TIMEOUT, OP_TIMEOUT, Revoked};

const RETRY_EVERY: Duration = Duration::from_millis(500);

pub(super) async fn subscribe(
    client: ::redis::Client,
    channel: String,
    feed: broadcast::Sender<Revoked>,
    stop: CancellationToken,
) {
    let mut was_up = true;
    loop {
        match listen(&client, &channel, &feed, &stop).await {
            Ok(()) if stop.is_cancelled() => return,
            Ok(()) => tracing::warn!("redis revocation subscription closed; reconnecting"),
            Err(e) if was_up => tracing::warn!(error = %e, "redis revocation subscription failed; retrying"),
            Err(_) => {}
        }
        was_up = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

/// Subscribes and forwards until the connection ends (`Ok`) or cannot be made (`Err`).
async fn listen(
    client: &::redis::Client,
    channel: &str,
    feed: &broadcast::Sender<Revoked>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut ps = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(OP_TIMEOUT, ps.subscribe(channel))
        .await
        .map_err(|_| "subscribe timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!("redis revocation subscription up");
    let mut messages = ps.into_on_message();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(msg) = msg else { return Ok(()) };
        let text = String::from_utf8_lossy(msg.get_payload_bytes());
        if let Some((session, until)) = text.split_once(' ') {
            if let Ok(until) = until.parse::<u64>() {
                // No receiver yet (gateway not started) is fine: the first resync covers it.
                let _ = feed.send((session.to_string(), until));
            }
        }
    }
}
