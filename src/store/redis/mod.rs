//! `store.kind = "redis"`: state shared by every replica pointed at the same Redis (7.0 or newer:
//! the scripts use `EXPIRE … GT` and `ZADD GT`; `GETDEL` needs 6.2). Standalone or
//! replicated Redis, not Redis Cluster: the scripts touch keys they find inside other keys.
//!
//! Keys, all under `store.key_prefix`: `session:{id}` (hash: login, cur, rexp, amax, rev),
//! `refresh:{sha256 hex}` (hash: sid, exp, spent), `ott:{hex}` (string `exp:login`),
//! `fail:{key}` (hash: c, t), `settings` (JSON), `revoked` (sorted set of session ids scored by
//! revoked-until) and the pub/sub channel `revocations` (`"{id} {until}"`).
//!
//! Every decision is made against the `now` the caller passes and the expiry stored in the value;
//! Redis TTLs only collect garbage (see [`ttl_for`]). Each atomic operation is one round trip:
//! a Lua script (rotation with reuse detection, revocation, failure counting) or `GETDEL` (OTT).
//! Every call is bounded by [`OP_TIMEOUT`], so a dead Redis answers `StoreError` quickly and
//! the endpoints 503 instead of hanging; the connection managers reconnect by themselves.

mod feed;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Client, Script};
use async_trait::async_trait;
use tokio::sync::broadcast;

use super::*;

/// Upper bound on one store call, connection set-up included.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Multiplexed connections; calls are spread over them round robin.
const POOL_SIZE: usize = 4;
/// Kept beyond a key's own expiry so replicas whose clocks differ a little still agree.
const TTL_SLACK: u64 = 60;
/// TTL for a key whose expiry is already behind this host's clock (clock skew, or synthetic
/// clocks in tests): kept a while, since validity is checked against the stored expiry anyway.
const STALE_TTL: u64 = 3600;

const REVOKE_FN: &str = include_str!("revoke_fn.lua");

pub struct RedisStore {
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    rotate: Script,
    revoke: Script,
    record_failure: Script,
    feed: broadcast::Sender<Revoked>,
    _subscriber: tokio_util::sync::DropGuard,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// The TTL of a key that stops mattering at `expires` (unix seconds).
fn ttl_for(expires: u64) -> u64 {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match expires.checked_sub(wall) {
        Some(d) if d > 0 => d + TTL_SLACK,
        _ => STALE_TTL,
    }
}

fn hex(h: &TokenHash) -> String {
    use std::fmt::Write;
    h.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn num(s: &str) -> Result<u64, StoreError> {
    // Scores come back from sorted sets as floats ("1.7e9" never, but "1700000000" or "1e3").
    s.parse::<u64>().or_else(|_| s.parse::<f64>().map(|f| f as u64)).map_err(unavailable)
}

impl RedisStore {
    /// Builds the pool without waiting for Redis: connections are made on first use and remade
    /// after a failure, so a gateway can start (unready) while Redis is down.
    pub async fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::Open { key: "store.url", reason };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(bad("must start with redis:// or rediss://".into()));
        }
        let client = Client::open(url).map_err(|e| bad(format!("`{}`: {e}", redact(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let pool = (0..POOL_SIZE)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let (feed, _) = broadcast::channel(4096);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(feed::subscribe(client, format!("{prefix}revocations"), feed.clone(), stop.clone()));
        let store = Self {
            pool,
            next: AtomicUsize::new(0),
            prefix: prefix.to_string(),
            rotate: Script::new(&format!("{REVOKE_FN}\n{}", include_str!("rotate.lua"))),
            revoke: Script::new(&format!("{REVOKE_FN}\n{}", include_str!("revoke.lua"))),
            record_failure: Script::new(include_str!("record_failure.lua")),
            feed,
            _subscriber: stop.drop_guard(),
        };
        if let Err(e) = store.ping().await {
            tracing::warn!(url = %redact(url), error = %e, "redis unreachable at start; unready until it answers");
        }
        Ok(store)
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable("timed out")),
        }
    }
}

/// The URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn create_session(&self, s: NewSession) -> Result<(), StoreError> {
        let skey = self.key("session", &s.id);
        let rkey = self.key("refresh", &hex(&s.refresh_hash));
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &rkey,
                &[("sid", s.id.as_str()), ("exp", &s.refresh_expires.to_string()), ("spent", "0")],
            )
            .expire(&rkey, ttl_for(s.refresh_expires) as i64)
            .hset_multiple(
                &skey,
                &[
                    ("login", s.login.as_str()),
                    ("cur", &hex(&s.refresh_hash)),
                    ("rexp", &s.refresh_expires.to_string()),
                    ("amax", &s.access_expires.to_string()),
                    ("rev", "0"),
                ],
            )
            .expire(&skey, ttl_for(s.refresh_expires.max(s.access_expires)) as i64);
        let mut c = self.conn();
        self.run(pipe.exec_async(&mut c)).await
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        refresh_expires: u64,
        access_expires: u64,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let next_hex = hex(next);
        let mut inv = self.rotate.prepare_invoke();
        inv.key(self.key("refresh", &hex(presented)))
            .key(self.key("refresh", &next_hex))
            .arg(&self.prefix)
            .arg(now)
            .arg(refresh_expires)
            .arg(access_expires)
            .arg(&next_hex)
            .arg(ttl_for(refresh_expires))
            .arg(ttl_for(refresh_expires.max(access_expires)));
        let mut c = self.conn();
        let r: Vec<String> = self.run(inv.invoke_async(&mut c)).await?;
        Ok(match r.as_slice() {
            [tag, sid, login] if tag == "rotated" => {
                Rotation::Rotated(SessionInfo { id: sid.clone(), login: login.clone() })
            }
            [tag, sid, until] if tag == "reused" => {
                Rotation::Reused { session: sid.clone(), revoked_until: num(until)? }
            }
            _ => Rotation::Unknown,
        })
    }

    async fn revoke_session(&self, session: &str) -> Result<Option<u64>, StoreError> {
        let mut inv = self.revoke.prepare_invoke();
        inv.arg(&self.prefix).arg(session);
        let mut c = self.conn();
        let until: Option<String> = self.run(inv.invoke_async(&mut c)).await?;
        until.as_deref().map(num).transpose()
    }

    async fn put_ott(&self, hash: &TokenHash, login: &str, expires: u64) -> Result<(), StoreError> {
        let mut c = self.conn();
        let key = self.key("ott", &hex(hash));
        self.run(c.set_ex::<_, _, ()>(key, format!("{expires}:{login}"), ttl_for(expires))).await
    }

    async fn consume_ott(&self, hash: &TokenHash, now: u64) -> Result<Option<String>, StoreError> {
        let mut c = self.conn();
        let key = self.key("ott", &hex(hash));
        let v: Option<String> = self.run(c.get_del(key)).await?;
        let Some((exp, login)) = v.as_deref().and_then(|v| v.split_once(':')) else { return Ok(None) };
        Ok((num(exp)? > now).then(|| login.to_string()))
    }

    async fn settings(&self) -> Result<Option<ConnectorSettings>, StoreError> {
        let mut c = self.conn();
        let v: Option<String> = self.run(c.get(format!("{}settings", self.prefix))).await?;
        v.map(|t| serde_json::from_str(&t).map_err(unavailable)).transpose()
    }

    async fn put_settings(&self, settings: ConnectorSettings) -> Result<(), StoreError> {
        let text = serde_json::to_string(&settings).map_err(unavailable)?;
        let mut c = self.conn();
        self.run(c.set::<_, _, ()>(format!("{}settings", self.prefix), text)).await
    }

    async fn login_failures(&self, key: &str, now: u64) -> Result<Option<FailureCount>, StoreError> {
        let mut c = self.conn();
        let (count, ends): (Option<String>, Option<String>) = self
            .run(::redis::cmd("HMGET").arg(self.key("fail", key)).arg("c").arg("t").query_async(&mut c))
            .await?;
        let (Some(count), Some(ends)) = (count, ends) else { return Ok(None) };
        let f = FailureCount { count: num(&count)? as u32, resets_at: num(&ends)? };
        Ok((f.resets_at > now).then_some(f))
    }

    async fn record_login_failure(
        &self,
        key: &str,
        window_secs: u64,
        now: u64,
    ) -> Result<FailureCount, StoreError> {
        let mut inv = self.record_failure.prepare_invoke();
        inv.key(self.key("fail", key)).arg(now).arg(window_secs).arg(ttl_for(now + window_secs));
        let mut c = self.conn();
        let r: Vec<String> = self.run(inv.invoke_async(&mut c)).await?;
        match r.as_slice() {
            [count, ends] => Ok(FailureCount { count: num(count)? as u32, resets_at: num(ends)? }),
            _ => Err(unavailable("unexpected reply to the failure counter")),
        }
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        self.run(c.del::<_, ()>(self.key("fail", key))).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        self.run(::redis::cmd("PING").query_async::<()>(&mut c)).await
    }

    /// Redis drops expired keys by their TTL; what is left is the revoked set's old members.
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let mut c = self.conn();
        let n: usize =
            self.run(c.zrembyscore(format!("{}revoked", self.prefix), "-inf", format!("({now}"))).await?;
        Ok(n)
    }

    async fn live_revocations(&self, now: u64) -> Result<Vec<Revoked>, StoreError> {
        let mut c = self.conn();
        let flat: Vec<String> =
            self.run(c.zrangebyscore_withscores(format!("{}revoked", self.prefix), now, "+inf")).await?;
        flat.chunks_exact(2).map(|p| Ok((p[0].clone(), num(&p[1])?))).collect()
    }

    fn revocation_feed(&self) -> Option<broadcast::Receiver<Revoked>> {
        Some(self.feed.subscribe())
    }
}
