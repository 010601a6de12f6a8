//! `store.kind = "redis"`: state shared by every replica pointed at the same Redis (7.0 or newer:
//! the scripts use `EXPIRE … GT` and `ZADD GT`; `GETDEL` needs 6.2): one server (`store.url`),
//! the master Sentinel names (`store.sentinels`, found again after a failover: `conn.rs`), or
//! Redis Cluster (`store.cluster`).
//!
//! Keys, all under `store.key_prefix`, laid out for Cluster: a script may only touch keys of one
//! hash slot, so each key that a script touches together with another shares its `{hash tag}`:
//! `sess:{ID}` (hash: the fields of `SessionRecord`, see [`SESSION_FIELDS`]; digests and the
//! sealed successor in hex), `login:{LOGIN}` (sorted set of the login's session ids scored by
//! refresh expiry: the session list's index), `{fail}:KEY` (hash: c, t; one tag for every
//! counter, so a reservation counts against a login and an address at once), `ott:HEX` (string
//! `exp:login`), and the global keys `recent` (sorted set of every session id scored by creation,
//! the newest [`RECENT_CAP`] kept), `audit` (list of audit events as JSON, newest first, trimmed
//! to `audit.keep`), `settings` (JSON), `revoked` (sorted set of session ids scored by
//! revoked-until) and the pub/sub channel `revocations` (`"{id} {until}"`). A prefix with a hash
//! tag of its own puts everything in one slot, which is legal too. Keys of the layout before
//! Cluster (`sess:ID`, `login:LOGIN`, `fail:KEY` without braces) are not read or migrated: their
//! sessions end (the users log in again) and the keys expire by their TTL.
//!
//! Every decision is made against the `now` the caller passes and the expiry stored in the value;
//! Redis TTLs only collect garbage (see [`ttl_for`]). Each atomic operation is one round trip on
//! one server: a Lua script (rotation with reuse detection, revocation, attempt reservation) or
//! `GETDEL` (OTT). On one server the scripts also update the global keys; on Cluster the script
//! touches its own slot only and the store then updates the login index, `revoked` and the feed
//! in separate commands. The session record is the authority (a revoked session's tokens are
//! refused by the script whatever else failed); the global steps only tell the other replicas
//! sooner, and one that failed is redone when the ended session's token or logout comes again.
//!
//! `store.min_replica_acks` = n: each state change (session creation, rotation, OTT use,
//! revocation, settings, attempt reservation) is followed, in the same pipeline on the same
//! connection to the master holding the key, by `WAIT n`; fewer acknowledgements answer
//! `StoreError` (503 `store.unavailable`), though the change did happen on the master. A client
//! that retries a refresh after that 503 within `tokens.refresh_reuse_grace` gets the same
//! successor (the reuse grace) or, if a failover lost the rotation, a fresh rotation of the same
//! token; never a theft signal. A retried OTT verification is refused (the OTT is spent); a
//! retried logout or login succeeds. A `WAIT` holds its connection, so waited writes travel on
//! connections of their own (`conn.rs`) and reads never queue behind one.
//!
//! Every call is bounded by [`OP_TIMEOUT`], so a dead Redis answers `StoreError` quickly and
//! the endpoints 503 instead of hanging; the connections reconnect by themselves.

mod conn;
mod feed;
mod record;
pub mod target;

use std::time::Duration;

use ::redis::{AsyncCommands, Pipeline, Script, Value};
use async_trait::async_trait;
use tokio::sync::broadcast;

use super::*;
use conn::{Conn, Nodes};
use record::{SESSION_FIELDS, hex, num, record_from, unhex};
use target::Target;

/// Upper bound on one store call, connection set-up included.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `WAIT` waits for replicas: well inside [`OP_TIMEOUT`].
const WAIT_MS: u64 = 500;
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

/// A script, and its text for `SCRIPT LOAD` on a node that does not know it yet.
struct Lua {
    script: Script,
    code: String,
}

impl Lua {
    fn new(code: String) -> Self {
        Self { script: Script::new(&code), code }
    }
}

pub struct RedisStore {
    nodes: Nodes,
    prefix: String,
    /// `store.min_replica_acks`.
    acks: u32,
    rotate: Lua,
    revoke: Lua,
    reserve: Lua,
    release: Lua,
    feed: broadcast::Sender<Revoked>,
    _stop: tokio_util::sync::DropGuard,
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

/// Checks `[store]` for a redis store (start and reload): the key and why when refused.
pub fn check(cfg: &StoreConfig) -> Result<(), (&'static str, String)> {
    Target::from_config(cfg).map(|_| ())
}

impl RedisStore {
    /// Builds the connections without waiting for Redis: they are made on first use and remade
    /// after a failure, so a gateway can start (unready) while Redis is down.
    pub async fn open(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let target = Target::from_config(cfg).map_err(|(key, reason)| StoreError::Open { key, reason })?;
        let stop = tokio_util::sync::CancellationToken::new();
        let where_ = match &target.topology {
            target::Topology::Url(u) => ("store.url", redact(u)),
            target::Topology::Sentinel { master, .. } => {
                ("store.sentinels", format!("sentinel master `{master}`"))
            }
            target::Topology::Cluster(_) => ("store.cluster", "cluster".to_string()),
        };
        let nodes = Nodes::open(&target, &stop)
            .await
            .map_err(|e| StoreError::Open { key: where_.0, reason: format!("`{}`: {e}", where_.1) })?;
        let prefix = cfg.key_prefix.clone();
        let (feed, _) = broadcast::channel(4096);
        tokio::spawn(feed::subscribe(
            nodes.feed_source(),
            format!("{prefix}revocations"),
            feed.clone(),
            stop.clone(),
        ));
        let store = Self {
            nodes,
            prefix,
            acks: target.acks,
            rotate: Lua::new(format!("{REVOKE_FN}\n{}", include_str!("rotate.lua"))),
            revoke: Lua::new(format!("{REVOKE_FN}\n{}", include_str!("revoke.lua"))),
            reserve: Lua::new(include_str!("reserve.lua").into()),
            release: Lua::new(include_str!("release.lua").into()),
            feed,
            _stop: stop.drop_guard(),
        };
        if let Err(e) = store.ping().await {
            tracing::warn!(store = %where_.1, error = %e, "redis unreachable at start; unready until it answers");
        }
        Ok(store)
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.nodes.conn().map_err(unavailable)
    }

    fn key_of(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `sess:{ID}`: the session's own slot.
    fn sess_key(&self, id: &str) -> String {
        format!("{}sess:{{{id}}}", self.prefix)
    }

    /// `login:{LOGIN}`: the login's session index.
    fn login_key(&self, login: &str) -> String {
        format!("{}login:{{{login}}}", self.prefix)
    }

    /// `{fail}:KEY`: every failure counter in one slot (a reservation spans several).
    fn fail_key(&self, key: &str) -> String {
        format!("{}{{fail}}:{key}", self.prefix)
    }

    fn ott_key(&self, hash: &TokenHash) -> String {
        format!("{}ott:{}", self.prefix, hex(hash))
    }

    /// '1' when one server holds every key, so scripts may update the global keys themselves.
    fn global(&self) -> &'static str {
        if self.nodes.is_cluster() { "0" } else { "1" }
    }

    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable("timed out")),
        };
        if r.is_err() {
            self.nodes.failed();
        }
        r
    }

    /// Runs `pipe` on the master holding `key`, followed by `WAIT` when `waited` and
    /// `min_replica_acks` > 0. Returns the pipeline's replies and how many replicas acknowledged
    /// (`None`: not asked); a server error in a reply is an error.
    async fn send(
        &self,
        key: &str,
        pipe: &Pipeline,
        waited: bool,
    ) -> Result<(Vec<Value>, Option<i64>), StoreError> {
        let (values, acks) = self.send_raw(key, pipe, waited).await?;
        let values = values
            .into_iter()
            .map(|v| v.extract_error())
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok((values, acks))
    }

    async fn send_raw(
        &self,
        key: &str,
        pipe: &Pipeline,
        waited: bool,
    ) -> Result<(Vec<Value>, Option<i64>), StoreError> {
        let waited = waited && self.acks > 0;
        let mut pipe = pipe.clone();
        if waited {
            pipe.cmd("WAIT").arg(self.acks).arg(WAIT_MS);
        }
        let mut values = self.run(self.nodes.send(key, &pipe, waited)).await?;
        let acks = if waited {
            match values.pop() {
                Some(Value::Int(n)) => Some(n),
                other => return Err(unavailable(format!("unexpected reply to WAIT: {other:?}"))),
            }
        } else {
            None
        };
        Ok((values, acks))
    }

    /// `Err` when fewer replicas than `min_replica_acks` acknowledged a change.
    fn acked(&self, acks: Option<i64>) -> Result<(), StoreError> {
        match acks {
            Some(n) if n < i64::from(self.acks) => {
                self.nodes.failed();
                Err(unavailable(format!("{n} of {} replicas acknowledged the write in time", self.acks)))
            }
            _ => Ok(()),
        }
    }

    /// Runs a script on `key`'s master (loading it there first if it is not known), then `WAIT`
    /// as [`Self::send`] does.
    async fn eval<T: ::redis::FromRedisValue>(
        &self,
        lua: &Lua,
        key: &str,
        build: impl Fn(&mut ::redis::ScriptInvocation<'_>),
        waited: bool,
    ) -> Result<(T, Option<i64>), StoreError> {
        let mut inv = lua.script.prepare_invoke();
        build(&mut inv);
        let mut pipe = ::redis::pipe();
        pipe.invoke_script(&inv);
        let mut loaded = false;
        loop {
            let (mut values, acks) = self.send_raw(key, &pipe, waited).await?;
            let reply = values.pop().ok_or_else(|| unavailable("no reply to a script"))?;
            match reply.extract_error() {
                Err(e)
                    if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)
                        && !loaded =>
                {
                    let mut load = ::redis::pipe();
                    load.cmd("SCRIPT").arg("LOAD").arg(&lua.code);
                    self.send(key, &load, false).await?;
                    loaded = true;
                }
                Err(e) => return Err(unavailable(e)),
                Ok(v) => return Ok((::redis::from_redis_value(v).map_err(unavailable)?, acks)),
            }
        }
    }

    /// Cluster only: what the scripts do on one server besides their own slot. Records `session`
    /// as revoked until `until` and tells the other replicas.
    async fn publish_revocation(&self, session: &str, until: &str) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let key = self.key_of("revoked");
        self.run(::redis::cmd("ZADD").arg(&key).arg("GT").arg(until).arg(session).exec_async(&mut c)).await?;
        let msg = format!("{session} {until}");
        self.run(c.publish::<_, _, ()>(self.key_of("revocations"), msg)).await
    }

    /// Cluster only: the login index follows a rotation.
    async fn move_index(&self, login: &str, session: &str, expires: u64, ttl: u64) -> Result<(), StoreError> {
        let key = self.login_key(login);
        let mut pipe = ::redis::pipe();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg("GT")
            .arg(expires)
            .arg(session)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl)
            .arg("GT");
        self.send(&key, &pipe, false).await.map(drop)
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
        let skey = self.sess_key(&s.id);
        let values = record::fields(&SessionRecord::new(&s));
        let ikey = self.login_key(&s.login);
        let recent = self.key_of("recent");
        let mut record = ::redis::pipe();
        record
            .hset_multiple(&skey, &values)
            .expire(&skey, ttl_for(s.refresh_expires.max(s.access_expires)) as i64);
        let mut index = ::redis::pipe();
        index
            .zrembyscore(&ikey, "-inf", s.created_at)
            .zadd(&ikey, &s.id, s.refresh_expires)
            .cmd("EXPIRE")
            .arg(&ikey)
            .arg(ttl_for(s.refresh_expires))
            .arg("GT")
            .cmd("EXPIRE")
            .arg(&ikey)
            .arg(ttl_for(s.refresh_expires))
            .arg("NX");
        let mut newest = ::redis::pipe();
        newest.zadd(&recent, &s.id, s.created_at).zremrangebyrank(&recent, 0, -(RECENT_CAP + 1));
        if self.nodes.is_cluster() {
            // Three slots: the record and its index must reach the replicas; `recent` is a list
            // for people. A failure leaves at most an index entry or record nobody holds a token
            // of (the login answers 503).
            let (r, i, _) = tokio::try_join!(
                self.send(&skey, &record, true),
                self.send(&ikey, &index, true),
                self.send(&recent, &newest, false)
            )?;
            self.acked(r.1)?;
            return self.acked(i.1);
        }
        let mut pipe = ::redis::pipe();
        pipe.cmd("MULTI");
        for p in [&record, &index, &newest] {
            for c in p.cmd_iter() {
                pipe.add_command(c.clone());
            }
        }
        pipe.cmd("EXEC");
        let (_, acks) = self.send(&skey, &pipe, true).await?;
        self.acked(acks)
    }

    async fn rotate_refresh(
        &self,
        p: &Presented,
        next: &Successor,
        grace_secs: u64,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let ttl = ttl_for(next.refresh_expires.max(next.access_expires));
        let (r, acks): (Vec<String>, _) = self
            .eval(
                &self.rotate,
                &self.sess_key(&p.session),
                |inv| {
                    inv.key(self.sess_key(&p.session))
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
                        .arg(ttl)
                        .arg(self.global());
                },
                true,
            )
            .await?;
        let cluster = self.nodes.is_cluster();
        let info = |login: &str| SessionInfo { id: p.session.clone(), login: login.to_string() };
        Ok(match r.as_slice() {
            [tag, login] if tag == "rotated" => {
                self.acked(acks)?;
                if cluster {
                    self.move_index(login, &p.session, next.refresh_expires, ttl).await?;
                }
                Rotation::Rotated(info(login))
            }
            [tag, login, sealed] if tag == "replayed" => {
                self.acked(acks)?;
                if cluster {
                    // Redone here in case the step after the rotation failed.
                    let exp = self.session(&p.session).await?.map_or(0, |r| r.expires_at);
                    self.move_index(login, &p.session, exp, ttl).await?;
                }
                Rotation::Replayed { session: info(login), sealed: unhex(sealed)? }
            }
            [tag, until] if tag == "reused" => {
                self.acked(acks)?;
                if cluster {
                    self.publish_revocation(&p.session, until).await?;
                }
                Rotation::Reused { session: p.session.clone(), revoked_until: num(until)? }
            }
            [tag, until] if tag == "ended" => {
                if cluster && num(until)? >= now {
                    self.publish_revocation(&p.session, until).await?;
                }
                Rotation::Unknown
            }
            _ => Rotation::Unknown,
        })
    }

    async fn revoke_session(&self, session: &str) -> Result<Option<u64>, StoreError> {
        let key = self.sess_key(session);
        let (until, acks): (Option<String>, _) = self
            .eval(
                &self.revoke,
                &key,
                |inv| {
                    inv.key(&key).arg(&self.prefix).arg(session).arg(self.global());
                },
                true,
            )
            .await?;
        let Some(until) = until else { return Ok(None) };
        self.acked(acks)?;
        if self.nodes.is_cluster() {
            self.publish_revocation(session, &until).await?;
        }
        num(&until).map(Some)
    }

    async fn sessions_of(&self, login: &str, now: u64) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn()?;
        self.run(c.zrangebyscore(self.login_key(login), format!("({now}"), "+inf")).await
    }

    /// Pages down the `recent` index, asking each page's expiries at once (one pipeline, or one
    /// command per session on Cluster, where they live in different slots), until `limit`
    /// unexpired sessions are found or the index ends.
    async fn recent_sessions(&self, limit: usize, now: u64) -> Result<Vec<String>, StoreError> {
        let page = limit.clamp(16, 1000) as isize;
        let mut out = Vec::new();
        let mut start = 0isize;
        let mut c = self.conn()?;
        while out.len() < limit {
            let ids: Vec<String> =
                self.run(c.zrevrange(self.key_of("recent"), start, start + page - 1)).await?;
            if ids.is_empty() {
                break;
            }
            let exps: Vec<Option<String>> = if self.nodes.is_cluster() {
                let asks = ids.iter().map(|id| {
                    let mut c = c.clone();
                    let key = self.sess_key(id);
                    async move { self.run(c.hget(key, "exp")).await }
                });
                futures_util::future::try_join_all(asks).await?
            } else {
                let mut pipe = ::redis::pipe();
                for id in &ids {
                    pipe.hget(self.sess_key(id), "exp");
                }
                self.run(pipe.query_async(&mut c)).await?
            };
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
        let mut c = self.conn()?;
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(self.sess_key(session)).arg(&SESSION_FIELDS[..]);
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
        let mut c = self.conn()?;
        self.run(pipe.exec_async(&mut c)).await
    }

    async fn audit_events(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn()?;
        self.run(c.lrange(self.key_of("audit"), 0, limit as isize - 1)).await
    }

    async fn put_ott(&self, hash: &TokenHash, login: &str, expires: u64) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let key = self.ott_key(hash);
        self.run(c.set_ex::<_, _, ()>(key, format!("{expires}:{login}"), ttl_for(expires))).await
    }

    async fn consume_ott(&self, hash: &TokenHash, now: u64) -> Result<Option<String>, StoreError> {
        let key = self.ott_key(hash);
        let mut pipe = ::redis::pipe();
        pipe.cmd("GETDEL").arg(&key);
        let (mut values, acks) = self.send(&key, &pipe, true).await?;
        let v: Option<String> =
            ::redis::from_redis_value(values.pop().unwrap_or(Value::Nil)).map_err(unavailable)?;
        let Some((exp, login)) = v.as_deref().and_then(|v| v.split_once(':')) else { return Ok(None) };
        // Spent on the master whatever follows: a retry finds it gone.
        self.acked(acks)?;
        Ok((num(exp)? > now).then(|| login.to_string()))
    }

    async fn settings(&self) -> Result<Option<ConnectorSettings>, StoreError> {
        let mut c = self.conn()?;
        let v: Option<String> = self.run(c.get(self.key_of("settings"))).await?;
        v.map(|t| serde_json::from_str(&t).map_err(unavailable)).transpose()
    }

    async fn put_settings(&self, settings: ConnectorSettings) -> Result<(), StoreError> {
        let text = serde_json::to_string(&settings).map_err(unavailable)?;
        let key = self.key_of("settings");
        let mut pipe = ::redis::pipe();
        pipe.set(&key, text);
        let (_, acks) = self.send(&key, &pipe, true).await?;
        self.acked(acks)
    }

    async fn login_failures(&self, key: &str, now: u64) -> Result<Option<FailureCount>, StoreError> {
        let mut c = self.conn()?;
        let (count, ends): (Option<String>, Option<String>) = self
            .run(::redis::cmd("HMGET").arg(self.fail_key(key)).arg("c").arg("t").query_async(&mut c))
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
        let Some((first, _)) = keys.first() else { return Ok(Reservation::Granted) };
        let (r, acks): (Vec<String>, _) = self
            .eval(
                &self.reserve,
                &self.fail_key(first),
                |inv| {
                    inv.arg(now).arg(window_secs).arg(ttl_for(now + window_secs));
                    for (key, max) in keys {
                        inv.key(self.fail_key(key)).arg(*max);
                    }
                },
                true,
            )
            .await?;
        match r.as_slice() {
            [tag] if tag == "granted" => {
                self.acked(acks)?;
                Ok(Reservation::Granted)
            }
            [tag, ends] if tag == "refused" => Ok(Reservation::Refused { resets_at: num(ends)? }),
            _ => Err(unavailable("unexpected reply to an attempt reservation")),
        }
    }

    async fn release_attempt(&self, key: &str, now: u64) -> Result<(), StoreError> {
        let key = self.fail_key(key);
        self.eval::<Value>(
            &self.release,
            &key,
            |inv| {
                inv.key(&key).arg(now);
            },
            false,
        )
        .await
        .map(drop)
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        self.run(c.del::<_, ()>(self.fail_key(key))).await
    }

    /// Keys under `store.key_prefix`, counted with SCAN (never KEYS, which blocks Redis), on
    /// every master of a Cluster.
    async fn entries(&self) -> Result<usize, StoreError> {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for ch in self.prefix.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('*');
        let mut n = 0usize;
        for node in self.nodes.masters().await.map_err(unavailable)? {
            let mut cursor = 0u64;
            loop {
                let mut scan = ::redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) =
                    self.run(self.nodes.on_node(node.as_ref(), scan)).await?;
                n += keys.len();
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(n)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        self.run(::redis::cmd("PING").query_async::<()>(&mut c)).await
    }

    /// Redis drops expired keys by their TTL; what is left is the revoked set's old members and
    /// `recent` entries older than any refresh token lives.
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let mut c = self.conn()?;
        let n: usize = self.run(c.zrembyscore(self.key_of("revoked"), "-inf", format!("({now}"))).await?;
        let old = now.saturating_sub(MAX_REFRESH_SECS);
        let m: usize = self.run(c.zrembyscore(self.key_of("recent"), "-inf", format!("({old}"))).await?;
        Ok(n + m)
    }

    async fn live_revocations(&self, now: u64) -> Result<Vec<Revoked>, StoreError> {
        let mut c = self.conn()?;
        let flat: Vec<String> =
            self.run(c.zrangebyscore_withscores(self.key_of("revoked"), now, "+inf")).await?;
        flat.chunks_exact(2).map(|p| Ok((p[0].clone(), num(&p[1])?))).collect()
    }

    fn revocation_feed(&self) -> Option<broadcast::Receiver<Revoked>> {
        Some(self.feed.subscribe())
    }
}
