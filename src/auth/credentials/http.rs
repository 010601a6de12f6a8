//! `credentials.kind = "http"`: the BO checks the password. The gateway POSTs
//! `{"login", "password"}` to `url`: 200 means valid, 401/403 wrong credentials, anything else
//! or no answer within `timeout` means the credential service is unavailable (503). Roles come
//! from the optional `roles_file`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{Verdict, valid_name, well_formed_login};
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
    client: reqwest::Client,
    roles: HashMap<String, Vec<String>>,
}

impl HttpCheck {
    pub fn load(cfg: &CredentialsConfig, file: &Path) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(file, key, reason);
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| err("credentials.url", format!("`{}`: {e}", cfg.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("credentials.url", "must be an http:// or https:// URL".into()));
        }
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
            let path = &cfg.roles_file;
            let text = std::fs::read_to_string(path)
                .map_err(|e| err("credentials.roles_file", format!("cannot read {}: {e}", path.display())))?;
            let parsed: RolesFile = toml::from_str(&text)
                .map_err(|e| ConfigError::new(path, "", e.message().trim().to_string()))?;
            for (login, roles) in &parsed.roles {
                if let Some(r) = roles.iter().find(|r| !valid_name(r)) {
                    return Err(ConfigError::new(
                        path,
                        format!("roles.{login}"),
                        format!("role `{r}` is not header-safe"),
                    ));
                }
            }
            parsed.roles
        };
        Ok(Self { url, client, roles })
    }

    pub fn roles(&self, login: &str) -> Vec<String> {
        self.roles.get(login).cloned().unwrap_or_default()
    }

    pub async fn check(&self, login: &str, password: &str) -> Result<Verdict, GatewayError> {
        if !valid_name(login) || !well_formed_login(login) {
            return Ok(Verdict::Invalid);
        }
        let body = serde_json::json!({ "login": login, "password": password });
        let resp = self.client.post(self.url.clone()).json(&body).send().await.map_err(|e| {
            let why = if e.is_timeout() { "timed out".to_string() } else { e.without_url().to_string() };
            GatewayError::CredentialsUnavailable(why)
        })?;
        match resp.status().as_u16() {
            200 => Ok(Verdict::Valid { roles: self.roles(login) }),
            401 | 403 => Ok(Verdict::Invalid),
            other => {
                Err(GatewayError::CredentialsUnavailable(format!("credential service answered {other}")))
            }
        }
    }
}
