//! `credentials.kind = "file"`: argon2id hashes from a users file. Verification is slow by
//! design; the caller runs it off the runtime (see `check_password`).

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Deserialize;

use super::{Verdict, valid_name, well_formed_login};
use crate::config::{ConfigError, CredentialsConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    login: String,
    password_hash: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Clone)]
pub struct User {
    pub login: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    password_hash: String,
}

pub struct FileUsers {
    users: HashMap<String, User>,
    /// Verified against when the login is unknown, so both cases cost the same hashing time.
    dummy_hash: String,
}

impl FileUsers {
    pub fn load(cfg: &CredentialsConfig, file: &Path) -> Result<Self, ConfigError> {
        let path = &cfg.users_file;
        let err = |key: String, reason: String| ConfigError::new(path, key, reason);
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(file, "credentials.users_file", format!("cannot read {}: {e}", path.display()))
        })?;
        let parsed: UsersFile =
            toml::from_str(&text).map_err(|e| err(String::new(), e.message().trim().into()))?;
        let mut users = HashMap::new();
        let mut params = None;
        for (i, u) in parsed.users.into_iter().enumerate() {
            if !valid_name(&u.login) || !well_formed_login(&u.login) {
                return Err(err(
                    format!("users[{i}].login"),
                    "empty, too long, surrounded by whitespace, or contains a control character or comma"
                        .into(),
                ));
            }
            if let Some(r) = u.roles.iter().find(|r| !valid_name(r)) {
                return Err(err(
                    format!("users[{i}].roles"),
                    format!("role `{r}` is empty or contains a control character or comma"),
                ));
            }
            let phc = PasswordHash::new(&u.password_hash)
                .map_err(|e| err(format!("users[{i}].password_hash"), format!("not a PHC string: {e}")))?;
            if phc.algorithm.as_str() != "argon2id" {
                return Err(err(
                    format!("users[{i}].password_hash"),
                    "must be an argon2id hash (bo-gateway hash-password)".into(),
                ));
            }
            if params.is_none() {
                params = Params::try_from(&phc).ok();
            }
            if users.contains_key(&u.login) {
                return Err(err(format!("users[{i}].login"), format!("duplicate login `{}`", u.login)));
            }
            users.insert(
                u.login.clone(),
                User { login: u.login, roles: u.roles, disabled: u.disabled, password_hash: u.password_hash },
            );
        }
        let dummy_hash = hash_with(&random_password(), params.unwrap_or_default())
            .map_err(|e| err(String::new(), format!("cannot compute the timing-equaliser hash: {e}")))?;
        Ok(Self { users, dummy_hash })
    }

    pub fn user(&self, login: &str) -> Option<&User> {
        self.users.get(login)
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Synchronous and slow (argon2id): call through `check_password`.
    pub(super) fn verify_blocking(&self, login: &str, password: &str) -> Verdict {
        let (user, hash) = match self.users.get(login) {
            Some(u) => (Some(u), u.password_hash.as_str()),
            None => (None, self.dummy_hash.as_str()),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        match user {
            Some(u) if ok && u.disabled => Verdict::Disabled,
            Some(u) if ok => Verdict::Valid { roles: u.roles.clone() },
            _ => Verdict::Invalid,
        }
    }
}

fn random_password() -> String {
    crate::auth::tokens::random_token(24)
}

/// An argon2id PHC string with the recommended parameters (for `bo-gateway hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    hash_with(password, Params::default())
}

/// An argon2id PHC string with explicit costs (memory in KiB, iterations, lanes): for tests and
/// benchmarks that need cheap hashes, or operators who tune the cost.
pub fn hash_password_with(password: &str, m_kib: u32, t: u32, p: u32) -> Result<String, String> {
    hash_with(password, Params::new(m_kib, t, p, None).map_err(|e| e.to_string())?)
}

fn hash_with(password: &str, params: Params) -> Result<String, String> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no randomness".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(users: &str) -> Result<FileUsers, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, users).unwrap();
        let cfg = CredentialsConfig { users_file: path, ..Default::default() };
        FileUsers::load(&cfg, Path::new("gateway.toml"))
    }

    #[test]
    fn verdicts() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let creds = load(&format!(
            "[[users]]\nlogin = \"alice\"\npassword_hash = \"{h}\"\nroles = [\"admin\"]\n\
             [[users]]\nlogin = \"bob\"\npassword_hash = \"{h}\"\ndisabled = true\n"
        ))
        .unwrap();
        assert_eq!(creds.verify_blocking("alice", "s3cret"), Verdict::Valid { roles: vec!["admin".into()] });
        assert_eq!(creds.verify_blocking("alice", "wrong"), Verdict::Invalid);
        assert_eq!(creds.verify_blocking("nobody", "s3cret"), Verdict::Invalid);
        assert_eq!(creds.verify_blocking("bob", "s3cret"), Verdict::Disabled);
        assert_eq!(creds.verify_blocking("bob", "wrong"), Verdict::Invalid);
    }

    #[test]
    fn surrounding_whitespace_is_never_a_login() {
        let h = hash_password_with("pw", 8, 1, 1).unwrap();
        let creds = load(&format!("[[users]]\nlogin = \"admin\"\npassword_hash = \"{h}\"\n")).unwrap();
        for login in [" admin", "admin ", "admin\t", "\u{0}admin", "ad\nmin"] {
            assert_eq!(creds.verify_blocking(login, "pw"), Verdict::Invalid, "{login:?}");
        }
        let e = load(&format!("[[users]]\nlogin = \" admin\"\npassword_hash = \"{h}\"\n")).err().unwrap();
        assert_eq!(e.key, "users[0].login");
    }

    #[test]
    fn bad_users_files_are_named() {
        let e = load("[[users]]\nlogin = \"a\"\npassword_hash = \"plain\"\n").err().unwrap();
        assert_eq!(e.key, "users[0].password_hash");
        let e = load("[[users]]\nlogin = \"a\"\npassword_hash = \"x\"\nrole = []\n").err().unwrap();
        assert!(e.reason.contains("unknown field"), "{}", e.reason);
    }
}
