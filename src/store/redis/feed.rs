//! The subscriber behind [`super::RedisStore`]'s revocation feed: one pub/sub connection,
//! remade after any failure, and on Sentinel after every change of master (a demoted or dead
//! master hears nothing more). On Cluster a `PUBLISH` reaches every node, so one subscription
//! on any node hears all; the crate's cluster connection resubscribes after a reconnect.
//! Messages lost while it is down are made up for by the gateway's periodic resync
//! (`Store::live_revocations`), not here.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::conn::FeedSource;
use super::{CONNECT_TIMEOUT, OP_TIMEOUT, Revoked};

const RETRY_EVERY: Duration = Duration::from_millis(500);

pub(super) async fn subscribe(
    source: FeedSource,
    channel: String,
    feed: broadcast::Sender<Revoked>,
    stop: CancellationToken,
) {
    let mut was_up = true;
    loop {
        let listened = match &source {
            FeedSource::Server(client) => listen(client, None, &channel, &feed, &stop).await,
            FeedSource::Sentinel(s) => match s.client() {
                Some(client) => listen(&client, Some(s.switched.subscribe()), &channel, &feed, &stop).await,
                None => Err("no master known yet".to_string()),
            },
            FeedSource::Cluster(b) => listen_cluster(b, &channel, &feed, &stop).await,
        };
        match listened {
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

/// Subscribes and forwards until the connection ends or the master changes (`Ok`) or cannot be
/// made (`Err`).
async fn listen(
    client: &::redis::Client,
    mut switched: Option<tokio::sync::watch::Receiver<u64>>,
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
            _ = master_switched(&mut switched) => {
                tracing::info!("redis master changed; subscribing on the new one");
                return Ok(());
            }
            m = messages.next() => m,
        };
        let Some(msg) = msg else { return Ok(()) };
        forward(msg.get_payload_bytes(), feed);
    }
}

async fn master_switched(switched: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = switched {
        if rx.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

fn forward(payload: &[u8], feed: &broadcast::Sender<Revoked>) {
    let text = String::from_utf8_lossy(payload);
    if let Some((session, until)) = text.split_once(' ') {
        if let Ok(until) = until.parse::<u64>() {
            // No receiver yet (gateway not started) is fine: the first resync covers it.
            let _ = feed.send((session.to_string(), until));
        }
    }
}

/// Cluster pub/sub needs RESP3: messages arrive as pushes on a channel of their own.
async fn listen_cluster(
    seeds: &super::conn::ClusterSeeds,
    channel: &str,
    feed: &broadcast::Sender<Revoked>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = seeds
        .builder()
        .use_protocol(::redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()
        .map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(OP_TIMEOUT, conn.subscribe(channel))
        .await
        .map_err(|_| "subscribe timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!("redis revocation subscription up (cluster)");
    loop {
        let push = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            p = rx.recv() => p,
        };
        let Some(push) = push else { return Ok(()) };
        if push.kind == ::redis::PushKind::Message {
            if let Some(::redis::Value::BulkString(payload)) = push.data.get(1) {
                forward(payload, feed);
            }
        }
    }
}
