//! Which Redis `[store]` points at, and the rules for saying so: exactly one of `url`,
//! `sentinels` + `master_name`, or `cluster`; `password_env` names a variable that is set.
//! Checked by `Runtime::load` (start and reload) and again by `RedisStore::open`.

use crate::config::StoreConfig;

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (and whatever replicas it has): `redis://` or `rediss://`.
    Url(String),
    /// The master Sentinel names `master`, found again after every failover. Sentinels are
    /// asked without a password; `password_env` is the data nodes'. Plain TCP (TLS: `url` only).
    Sentinel { sentinels: Vec<(String, u16)>, master: String },
    /// Redis Cluster, from any of these nodes (the others are discovered). Plain TCP.
    Cluster(Vec<(String, u16)>),
}

#[derive(Debug, Clone)]
pub struct Target {
    pub topology: Topology,
    /// From the variable `password_env` names (never inline in the file).
    pub password: Option<String>,
    /// `min_replica_acks`.
    pub acks: u32,
}

/// A rule broken: the key and why.
pub type Refusal = (&'static str, String);

impl Target {
    pub fn from_config(cfg: &StoreConfig) -> Result<Self, Refusal> {
        let set: Vec<&'static str> = [
            (!cfg.url.is_empty()).then_some("store.url"),
            (!cfg.sentinels.is_empty()).then_some("store.sentinels"),
            (!cfg.cluster.is_empty()).then_some("store.cluster"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let topology = match set.as_slice() {
            [] => {
                return Err((
                    "store.url",
                    "store.kind \"redis\" needs one of store.url, store.sentinels (with \
                     store.master_name) or store.cluster"
                        .into(),
                ));
            }
            [_, second, ..] => {
                return Err((second, format!("only one of {} may be set", set.join(", "))));
            }
            ["store.url"] => {
                if !(cfg.url.starts_with("redis://") || cfg.url.starts_with("rediss://")) {
                    return Err((
                        "store.url",
                        "must start with redis:// or rediss:// when store.kind is \"redis\"".into(),
                    ));
                }
                Topology::Url(cfg.url.clone())
            }
            ["store.sentinels"] => {
                if cfg.master_name.is_empty() {
                    return Err(("store.master_name", "is required with store.sentinels".into()));
                }
                Topology::Sentinel {
                    sentinels: addrs("store.sentinels", &cfg.sentinels)?,
                    master: cfg.master_name.clone(),
                }
            }
            _ => Topology::Cluster(addrs("store.cluster", &cfg.cluster)?),
        };
        if !cfg.master_name.is_empty() && !matches!(topology, Topology::Sentinel { .. }) {
            return Err(("store.master_name", "is only meaningful with store.sentinels".into()));
        }
        let password = match cfg.password_env.as_str() {
            "" => None,
            name => match std::env::var(name) {
                Ok(p) if !p.is_empty() => Some(p),
                _ => return Err(("store.password_env", format!("environment variable `{name}` is not set"))),
            },
        };
        Ok(Self { topology, password, acks: cfg.min_replica_acks })
    }
}

/// `host:port` entries (IPv6 in brackets).
fn addrs(key: &'static str, list: &[String]) -> Result<Vec<(String, u16)>, Refusal> {
    list.iter()
        .map(|a| {
            let bad = || (key, format!("`{a}` is not host:port"));
            let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains('/') {
                return Err(bad());
            }
            Ok((host.to_string(), port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(f: impl FnOnce(&mut StoreConfig)) -> StoreConfig {
        let mut c = StoreConfig { kind: "redis".into(), ..Default::default() };
        f(&mut c);
        c
    }

    fn refused(c: StoreConfig) -> Refusal {
        Target::from_config(&c).expect_err("refused")
    }

    #[test]
    fn exactly_one_topology() {
        assert_eq!(refused(cfg(|_| {})).0, "store.url");
        let both = cfg(|c| {
            c.url = "redis://h:1".into();
            c.cluster = vec!["h:2".into()];
        });
        assert_eq!(
            refused(both),
            ("store.cluster", "only one of store.url, store.cluster may be set".into())
        );
        let s = cfg(|c| c.sentinels = vec!["h:26379".into()]);
        assert_eq!(refused(s).0, "store.master_name");
        let m = cfg(|c| {
            c.url = "redis://h:1".into();
            c.master_name = "bo".into();
        });
        assert_eq!(refused(m).0, "store.master_name");
        assert_eq!(refused(cfg(|c| c.url = "http://h".into())).0, "store.url");
        assert_eq!(refused(cfg(|c| c.cluster = vec!["h".into()])).0, "store.cluster");
        assert_eq!(refused(cfg(|c| c.cluster = vec!["h:0".into()])).0, "store.cluster");
        let ok = Target::from_config(&cfg(|c| {
            c.sentinels = vec!["a:26379".into(), "[::1]:26380".into()];
            c.master_name = "bo".into();
            c.min_replica_acks = 1;
        }))
        .unwrap();
        assert_eq!(
            ok.topology,
            Topology::Sentinel {
                sentinels: vec![("a".into(), 26379), ("::1".into(), 26380)],
                master: "bo".into()
            }
        );
        assert_eq!(ok.acks, 1);
    }

    #[test]
    fn password_from_the_environment_only() {
        let c = cfg(|c| {
            c.url = "redis://h:1".into();
            c.password_env = "BO_GATEWAY_TEST_UNSET_REDIS_PASSWORD".into();
        });
        assert_eq!(refused(c).0, "store.password_env");
        let c = cfg(|c| {
            c.url = "redis://h:1".into();
            c.password_env = "PATH".into();
        });
        assert!(Target::from_config(&c).unwrap().password.is_some());
    }
}
