//! SMART Backend Services authorization (SMART App Launch 2.x, "Backend Services"): the token
//! endpoint from `.well-known/smart-configuration`, a client assertion JWT signed with RS384 or
//! ES384, and a new access token whenever the last one is about to expire (backend services get
//! no refresh tokens). A client-secret mode (`client_secret_post`) for servers that use one.
//! Tokens, keys and secrets are never printed.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How the client proves who it is.
pub enum Credentials {
    /// A private key (PEM: RSA for RS384, EC P-384 for ES384) and its key id.
    Key {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    },
    /// A client secret.
    Secret(String),
}

impl Credentials {
    /// Reads a PEM private key; RSA keys sign with RS384, EC keys with ES384.
    pub fn from_key_file(path: &Path, kid: Option<String>) -> Result<Credentials> {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the private key {}", path.display()))?;
        let text = String::from_utf8_lossy(&pem);
        let (key, alg) = if text.contains("BEGIN EC PRIVATE KEY")
            || (text.contains("BEGIN PRIVATE KEY") && EncodingKey::from_ec_pem(&pem).is_ok())
        {
            (EncodingKey::from_ec_pem(&pem)?, Algorithm::ES384)
        } else {
            let key = EncodingKey::from_rsa_pem(&pem).map_err(|_| {
                anyhow!(
                    "{} is not an RSA or EC (P-384) private key in PEM",
                    path.display()
                )
            })?;
            (key, Algorithm::RS384)
        };
        Ok(Credentials::Key { key, alg, kid })
    }
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    jti: String,
}

/// Access tokens for one client at one token endpoint.
pub struct Auth {
    client_id: String,
    credentials: Credentials,
    pub token_url: String,
    pub scope: String,
    current: Mutex<Option<(String, Instant)>>,
}

/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

impl Auth {
    /// Discovers the token endpoint and a scope from the server's SMART configuration.
    pub async fn discover(
        http: &reqwest::Client,
        base: &str,
        client_id: String,
        credentials: Credentials,
        scope: Option<String>,
    ) -> Result<Auth> {
        let url = format!(
            "{}/.well-known/smart-configuration",
            base.trim_end_matches('/')
        );
        let resp = http
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !resp.status().is_success() {
            bail!(
                "{url}: {}: the server publishes no SMART configuration; is it SMART-protected?",
                resp.status()
            );
        }
        let conf: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)
            .with_context(|| format!("{url} is not JSON"))?;
        let token_url = conf["token_endpoint"]
            .as_str()
            .ok_or_else(|| anyhow!("{url} names no token_endpoint"))?
            .to_string();
        // SMART v2 scopes (`.rs`) where the server lists them, else v1 (`.read`).
        let scope = scope.unwrap_or_else(|| {
            let v2 = conf["scopes_supported"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.ends_with(".rs")))
            });
            match v2 {
                true => "system/*.rs".into(),
                false => "system/*.read".into(),
            }
        });
        Ok(Auth {
            client_id,
            credentials,
            token_url,
            scope,
            current: Mutex::new(None),
        })
    }

    /// A valid access token: the last one, or a new one when it is about to expire.
    pub async fn token(&self, http: &reqwest::Client) -> Result<String> {
        if let Some((t, until)) = self.current.lock().expect("no panic").clone() {
            if Instant::now() + RENEW_BEFORE < until {
                return Ok(t);
            }
        }
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("scope", self.scope.clone()),
        ];
        match &self.credentials {
            Credentials::Key { key, alg, kid } => {
                let mut header = Header::new(*alg);
                header.kid = kid.clone();
                header.typ = Some("JWT".into());
                let claims = Assertion {
                    iss: &self.client_id,
                    sub: &self.client_id,
                    aud: &self.token_url,
                    exp: chrono::Utc::now().timestamp() + 240,
                    jti: format!("{:032x}", rand_u128()),
                };
                let jwt = jsonwebtoken::encode(&header, &claims, key)?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", jwt));
            }
            Credentials::Secret(secret) => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.clone()));
            }
        }
        let resp = http
            .post(&self.token_url)
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .with_context(|| format!("cannot reach the token endpoint {}", self.token_url))?;
        let status = resp.status();
        let body: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await?).unwrap_or_default();
        if !status.is_success() {
            // The OAuth error and its description; never the request.
            bail!(
                "{}: {status}: {} {}: check the client id, the key (and that the server has its \
                 public key) and the scope",
                self.token_url,
                body["error"].as_str().unwrap_or(""),
                body["error_description"].as_str().unwrap_or("")
            );
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("{}: no access_token in the answer", self.token_url))?
            .to_string();
        let lasts = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(300));
        *self.current.lock().expect("no panic") = Some((token.clone(), Instant::now() + lasts));
        Ok(token)
    }

    /// Forgets the token (the server refused it: it expired early).
    pub fn forget(&self) {
        *self.current.lock().expect("no panic") = None;
    }
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let a = h.finish();
    let mut h2 = std::collections::hash_map::RandomState::new().build_hasher();
    h2.write_u64(a);
    (u128::from(a) << 64) | u128::from(h2.finish())
}
