//! `credentials.kind = "http"`: the BO checks the password. The gateway POSTs
//! `{"login", "password"}` to `url`: 200 means valid, 401/403 wrong credentials, anything else
//! or no answer within `timeout` means the credential service is unavailable (503). Roles come
//! from the optional `roles_file`.
//!
//! With the optional `user_url`, the BO is also asked at each refresh whether the login may
//! still refresh: a POST of `{"login"}` (no password; the login as the gateway keys it, see
//! `Credentials::canonical_login`). 200: yes; 403: disabled; 404 or 410: removed; anything else
//! or no answer: unavailable (503, nothing ended). Without it the BO is asked at login only, so a
//! BO that implements nothing new keeps working as before.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{Standing, Verdict, valid_name, well_formed_login};
use crate::config::{ConfigError, CredentialsConfig};
use crate::error::GatewayError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    #[serde(default)]
    roles: HashMap<String, Vec<String>>,
}

pub struct HttpCheck {
    url: reqwest::Url,
    user_url: Option<reqwest::Url>,
    client: reqwest::Client,
    /// Keyed by the case-folded login (the BO takes `Bob` and `bob` for one login).
    roles: HashMap<String, Vec<String>>,
}

/// The http source's form of a login: case-folded.
pub(super) fn fold(login: &str) -> String {
    login.to_lowercase()
}

fn parse_url(file: &Path, key: &str, value: &str) -> Result<reqwest::Url, ConfigError> {
    let url =
        reqwest::Url::parse(value).map_err(|e| ConfigError::new(file, key, format!("`{value}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(file, key, "must be an http:// or https:// URL"));
    }
    Ok(url)
}

impl HttpCheck {
    pub fn load(cfg: &CredentialsConfig, file: &Path) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(file, key, reason);
        let url = parse_url(file, "credentials.url", &cfg.url)?;
        let user_url = match cfg.user_url.as_str() {
            "" => None,
            u => Some(parse_url(file, "credentials.user_url", u)?),
        };
        if cfg.timeout.0.is_zero() {
            return Err(err("credentials.timeout", "must be greater than 0".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.0)
            .connect_timeout(cfg.timeout.0.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| err("credentials.url", format!("cannot build the HTTP client: {e}")))?;
        let roles = if cfg.roles_file.as_os_str().is_empty() {
            HashMap::new()
        } else {
            load_roles(&cfg.roles_file, file)?
        };
        Ok(Self { url, user_url, client, roles })
    }

    /// The roles of `login` (any case) from the roles file.
    pub fn roles(&self, login: &str) -> Vec<String> {
        self.roles.get(&fold(login)).cloned().unwrap_or_default()
    }

    /// Whether the BO is asked at each refresh (`user_url` is set).
    pub fn asks_at_refresh(&self) -> bool {
        self.user_url.is_some()
    }

    pub async fn check(&self, login: &str, password: &str) -> Result<Verdict, GatewayError> {
        if !valid_name(login) || !well_formed_login(login) {
            return Ok(Verdict::Invalid);
        }
        let body = serde_json::json!({ "login": login, "password": password });
        match self.post(&self.url, &body).await? {
            200 => Ok(Verdict::Valid { roles: self.roles(login) }),
            401 | 403 => Ok(Verdict::Invalid),
            other => Err(unavailable(other)),
        }
    }

    /// At a refresh: may `login` still refresh? `Active` without a `user_url` (nothing to ask).
    pub async fn standing(&self, login: &str) -> Result<Standing, GatewayError> {
        let Some(url) = &self.user_url else { return Ok(Standing::Active) };
        match self.post(url, &serde_json::json!({ "login": login })).await? {
            200 => Ok(Standing::Active),
            403 => Ok(Standing::Disabled),
            404 | 410 => Ok(Standing::Removed),
            other => Err(unavailable(other)),
        }
    }

    async fn post(&self, url: &reqwest::Url, body: &serde_json::Value) -> Result<u16, GatewayError> {
        let resp = self.client.post(url.clone()).json(body).send().await.map_err(|e| {
            let why = if e.is_timeout() { "timed out".to_string() } else { e.without_url().to_string() };
            GatewayError::CredentialsUnavailable(why)
        })?;
        Ok(resp.status().as_u16())
    }
}

fn unavailable(status: u16) -> GatewayError {
    GatewayError::CredentialsUnavailable(format!("credential service answered {status}"))
}

/// `roles_file`: `[roles] login = ["role", ...]`, keyed by the case-folded login; two entries
/// that fold to one login are refused (which would win is not for the gateway to guess).
fn load_roles(path: &Path, file: &Path) -> Result<HashMap<String, Vec<String>>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(file, "credentials.roles_file", format!("cannot read {}: {e}", path.display()))
    })?;
    let parsed: RolesFile =
        toml::from_str(&text).map_err(|e| ConfigError::new(path, "", e.message().trim().to_string()))?;
    let mut roles = HashMap::new();
    for (login, list) in parsed.roles {
        if let Some(r) = list.iter().find(|r| !valid_name(r)) {
            return Err(ConfigError::new(
                path,
                format!("roles.{login}"),
                format!("role `{r}` is not header-safe"),
            ));
        }
        if roles.insert(fold(&login), list).is_some() {
            return Err(ConfigError::new(
                path,
                format!("roles.{login}"),
                "names the same login as another entry (logins are case-insensitive)",
            ));
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(roles: &str, user_url: &str) -> Result<HttpCheck, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roles.toml");
        std::fs::write(&path, roles).unwrap();
        let cfg = CredentialsConfig {
            kind: "http".into(),
            url: "http://127.0.0.1:1/auth/token".into(),
            user_url: user_url.into(),
            roles_file: path,
            ..Default::default()
        };
        HttpCheck::load(&cfg, Path::new("gateway.toml"))
    }

    #[test]
    fn roles_are_found_in_any_case() {
        let h = load("[roles]\nAlice = [\"admin\"]\n", "").unwrap();
        assert_eq!(h.roles("alice"), ["admin"]);
        assert_eq!(h.roles("ALICE"), ["admin"]);
        assert!(h.roles("bob").is_empty());
        assert!(!h.asks_at_refresh());
    }

    #[test]
    fn bad_roles_files_and_user_urls_are_named() {
        let e = load("[roles]\nalice = [\"a\"]\nALICE = [\"b\"]\n", "").err().unwrap();
        assert!(e.key == "roles.alice" || e.key == "roles.ALICE", "{}", e.key);
        let e = load("", "ftp://bo/users").err().unwrap();
        assert_eq!(e.key, "credentials.user_url");
        let e = load("", "not a url").err().unwrap();
        assert_eq!(e.key, "credentials.user_url");
        assert!(load("", "http://127.0.0.1:1/users").unwrap().asks_at_refresh());
    }
}
