//! `store.kind = "redis"`: state shared by every replica pointed at the same Redis (7.0 or newer:
//! the scripts use `EXPIRE … GT` and `ZADD GT`; `GETDEL` needs 6.2). Standalone or
//! replicated Redis, not Redis Cluster: the scripts touch keys they find inside other keys.
//!
//! Keys, all under `store.key_prefix`: `sess:{id}` (hash: the fields of `SessionRecord`, see
//! [`SESSION_FIELDS`]; digests and the sealed successor in hex), `ott:{hex}` (string `exp:login`),
//! `login:{login}` (sorted set of the login's session ids scored by refresh expiry: the session
//! list's index), `recent` (sorted set of every session id scored by creation, the newest
//! [`RECENT_CAP`] kept), `audit` (list of audit events as JSON, newest first, trimmed to
//! `audit.keep`), `fail:{key}` (hash: c, t), `settings` (JSON), `revoked` (sorted set of session ids scored by
//! revoked-until) and the pub/sub channel `revocations` (`"{id} {until}"`).
//!
//! Every decision is made against the `now` the caller passes and the expiry stored in the value;
//! Redis TTLs only collect garbage (see [`ttl_for`]). Each atomic operation is one round trip:
//! a Lua script (rotation with reuse detection, revocation, attempt reservation) or `GETDEL`
//! (OTT).
//!
//! Sessions from before bounded sessions (`session:{id}`, `refresh:{hash}`) are not read: their
//! refresh tokens are refused as `token.invalid` before the store is asked, and the keys expire
//! by their TTL.
//! Every call is bounded by [`OP_TIMEOUT`], so a dead Redis answers `StoreError` quickly and
//! the endpoints 503 instead of hanging; the connection managers reconnect by themselves.

mod feed;
mod record;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Client, Script};
use async_trait::async_trait;
use tokio::sync::broadcast;

use super::*;
use record::{SESSION_FIELDS, hex, num, record_from, unhex};

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

/// Sessions the `recent` index keeps at most (the newest); a longer list is no list for people.
const RECENT_CAP: isize = 100_000;
/// Longest a refresh token lives (`runtime::validate_lifetimes`): older `recent` entries are
/// expired whatever their record says, and purged.
const MAX_REFRESH_SECS: u64 = 30 * 24 * 3600;

const REVOKE_FN: &str = include_str!("revoke_fn.lua");

pub struct RedisStore {
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    rotate: Script,
    revoke: Script,
    reserve: Script,
    release: Script,
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
            reserve: Script::new(include_str!("reserve.lua")),
            release: Script::new(include_str!("release.lua")),
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

    fn key_of(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
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
        let skey = self.key("sess", &s.id);
        let values = record::fields(&SessionRecord::new(&s));
        let ikey = self.key("login", &s.login);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .hset_multiple(&skey, &values)
            .expire(&skey, ttl_for(s.refresh_expires.max(s.access_expires)) as i64)
            .zrembyscore(&ikey, "-inf", s.created_at)
            .zadd(&ikey, &s.id, s.refresh_expires)
            .zadd(self.key_of("recent"), &s.id, s.created_at)
            .zremrangebyrank(self.key_of("recent"), 0, -(RECENT_CAP + 1))
            .cmd("EXPIRE")
            .arg(&ikey)
            .arg(ttl_for(s.refresh_expires))
            .arg("GT")
            .ignore()
            .cmd("EXPIRE")
            .arg(&ikey)
            .arg(ttl_for(s.refresh_expires))
            .arg("NX")
            .ignore();
        let mut c = self.conn();
        self.run(pipe.exec_async(&mut c)).await
    }

    async fn rotate_refresh(
        &self,
        p: &Presented,
        next: &Successor,
        grace_secs: u64,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let mut inv = self.rotate.prepare_invoke();
        inv.key(self.key("sess", &p.session))
            .arg(&self.prefix)
            .arg(&p.session)
            .arg(p.generation)
            .arg(hex(&p.key_hash))
            .arg(hex(&p.secret_hash))
            .arg(hex(&next.secret_hash))
            .arg(hex(&next.sealed))
            .arg(next.refresh_expires)
            .arg(next.access_expires)
            .arg(now)
            .arg(grace_secs)
            .arg(ttl_for(next.refresh_expires.max(next.access_expires)));
        let mut c = self.conn();
        let r: Vec<String> = self.run(inv.invoke_async(&mut c)).await?;
        let info = |login: &str| SessionInfo { id: p.session.clone(), login: login.to_string() };
        Ok(match r.as_slice() {
            [tag, login] if tag == "rotated" => Rotation::Rotated(info(login)),
            [tag, login, sealed] if tag == "replayed" => {
                Rotation::Replayed { session: info(login), sealed: unhex(sealed)? }
            }
            [tag, until] if tag == "reused" => {
                Rotation::Reused { session: p.session.clone(), revoked_until: num(until)? }
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

    async fn sessions_of(&self, login: &str, now: u64) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn();
        self.run(c.zrangebyscore(self.key("login", login), format!("({now}"), "+inf")).await
    }

    /// Pages down the `recent` index, asking each page's expiries in one pipeline, until
    /// `limit` unexpired sessions are found or the index ends.
    async fn recent_sessions(&self, limit: usize, now: u64) -> Result<Vec<String>, StoreError> {
        let page = limit.clamp(16, 1000) as isize;
        let mut out = Vec::new();
        let mut start = 0isize;
        let mut c = self.conn();
        while out.len() < limit {
            let ids: Vec<String> =
                self.run(c.zrevrange(self.key_of("recent"), start, start + page - 1)).await?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = ::redis::pipe();
            for id in &ids {
                pipe.hget(self.key("sess", id), "exp");
            }
            let exps: Vec<Option<String>> = self.run(pipe.query_async(&mut c)).await?;
            for (id, exp) in ids.iter().zip(exps) {
                if out.len() < limit && exp.as_deref().map(num).transpose()?.is_some_and(|e| e > now) {
                    out.push(id.clone());
                }
            }
            start += page;
        }
        Ok(out)
    }

    async fn session(&self, session: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut c = self.conn();
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(self.key("sess", session)).arg(&SESSION_FIELDS[..]);
        let v: Vec<Option<String>> = self.run(cmd.query_async(&mut c)).await?;
        record_from(&v)
    }

    async fn append_audit(&self, event: &str, keep: usize) -> Result<(), StoreError> {
        if keep == 0 {
            return Ok(());
        }
        let key = self.key_of("audit");
        let mut pipe = ::redis::pipe();
        pipe.atomic().lpush(&key, event).ignore().ltrim(&key, 0, keep as isize - 1).ignore();
        let mut c = self.conn();
        self.run(pipe.exec_async(&mut c)).await
    }

    async fn audit_events(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        self.run(c.lrange(self.key_of("audit"), 0, limit as isize - 1)).await
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

    async fn reserve_attempt(
        &self,
        keys: &[(&str, u32)],
        window_secs: u64,
        now: u64,
    ) -> Result<Reservation, StoreError> {
        let mut inv = self.reserve.prepare_invoke();
        inv.arg(now).arg(window_secs).arg(ttl_for(now + window_secs));
        for (key, max) in keys {
            inv.key(self.key("fail", key)).arg(*max);
        }
        let mut c = self.conn();
        let r: Vec<String> = self.run(inv.invoke_async(&mut c)).await?;
        match r.as_slice() {
            [tag] if tag == "granted" => Ok(Reservation::Granted),
            [tag, ends] if tag == "refused" => Ok(Reservation::Refused { resets_at: num(ends)? }),
            _ => Err(unavailable("unexpected reply to an attempt reservation")),
        }
    }

    async fn release_attempt(&self, key: &str, now: u64) -> Result<(), StoreError> {
        let mut inv = self.release.prepare_invoke();
        inv.key(self.key("fail", key)).arg(now);
        let mut c = self.conn();
        self.run(inv.invoke_async::<()>(&mut c)).await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        self.run(c.del::<_, ()>(self.key("fail", key))).await
    }

    /// Keys under `store.key_prefix`, counted with SCAN (never KEYS, which blocks Redis).
    async fn entries(&self) -> Result<usize, StoreError> {
        let mut c = self.conn();
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for ch in self.prefix.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('*');
        let mut cursor = 0u64;
        let mut n = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c),
                )
                .await?;
            n += keys.len();
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        self.run(::redis::cmd("PING").query_async::<()>(&mut c)).await
    }

    /// Redis drops expired keys by their TTL; what is left is the revoked set's old members and
    /// `recent` entries older than any refresh token lives.
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let mut c = self.conn();
        let n: usize =
            self.run(c.zrembyscore(format!("{}revoked", self.prefix), "-inf", format!("({now}"))).await?;
        let old = now.saturating_sub(MAX_REFRESH_SECS);
        let m: usize = self.run(c.zrembyscore(self.key_of("recent"), "-inf", format!("({old}"))).await?;
        Ok(n + m)
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
