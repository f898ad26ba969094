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
    /// Reads a private key: PEM, or a JWK set (JSON, as SMART clients keep them); RSA keys sign
    /// with RS384, EC keys with ES384.
    pub fn from_key_file(path: &Path, kid: Option<String>) -> Result<Credentials> {
        let pem = fs_err::read(path)
            .with_context(|| format!("cannot read the private key {}", path.display()))?;
        let text = String::from_utf8_lossy(&pem);
        if text.trim_start().starts_with('{') {
            return from_jwks(&pem, kid).with_context(|| format!("{}: a JWK set", path.display()));
        }
        if text.contains("PUBLIC KEY-----") || text.contains("BEGIN CERTIFICATE") {
            bail!(
                "{} holds a public key: --key takes the private key (the server keeps the public \
                 one, or its JWK set)",
                path.display()
            );
        }
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

/// The private key of a JWK set (RFC 7517): the one named `kid`, else the first with a private
/// part (`d`) of type RSA or EC P-384. Its `kid` goes into the assertion's header.
fn from_jwks(json: &[u8], kid: Option<String>) -> Result<Credentials> {
    use base64::Engine;
    let set: serde_json::Value = serde_json::from_slice(json).context("not JSON")?;
    let keys = match set["keys"].as_array() {
        Some(k) => k.clone(),
        None => vec![set.clone()],
    };
    let usable = |k: &&serde_json::Value| {
        k["d"].is_string()
            && (k["kty"] == "RSA" || (k["kty"] == "EC" && k["crv"] == "P-384"))
            && kid.as_deref().is_none_or(|id| k["kid"] == id)
    };
    let Some(k) = keys.iter().find(usable) else {
        bail!(
            "no private RSA or EC P-384 key{} in it",
            kid.as_deref()
                .map(|id| format!(" with kid {id}"))
                .unwrap_or_default()
        );
    };
    let member = |name: &str| -> Result<Vec<u8>> {
        let v = k[name]
            .as_str()
            .ok_or_else(|| anyhow!("the key has no `{name}`"))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|_| anyhow!("the key's `{name}` is not base64url"))
    };
    let kid = kid.or_else(|| k["kid"].as_str().map(str::to_string));
    if k["kty"] == "RSA" {
        // PKCS #1 RSAPrivateKey (RFC 8017 A.1.2).
        let mut body = der::integer(&[0]);
        for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
            body.extend(der::integer(&member(name)?));
        }
        let key = EncodingKey::from_rsa_der(&der::tlv(0x30, &body));
        return Ok(Credentials::Key {
            key,
            alg: Algorithm::RS384,
            kid,
        });
    }
    // PKCS #8 (RFC 5208) around an ECPrivateKey (RFC 5915) with its public key, as ring takes.
    let (d, x, y) = (member("d")?, member("x")?, member("y")?);
    let point = [&[0u8, 4][..], &x, &y].concat();
    let ec = der::tlv(
        0x30,
        &[
            der::integer(&[1]),
            der::tlv(0x04, &d),
            der::tlv(0xa1, &der::tlv(0x03, &point)),
        ]
        .concat(),
    );
    // id-ecPublicKey, secp384r1
    let alg_id = der::tlv(
        0x30,
        &[
            der::tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            der::tlv(0x06, &[0x2b, 0x81, 0x04, 0x00, 0x22]),
        ]
        .concat(),
    );
    let pkcs8 = der::tlv(
        0x30,
        &[der::integer(&[0]), alg_id, der::tlv(0x04, &ec)].concat(),
    );
    let key = EncodingKey::from_ec_der(&pkcs8);
    Ok(Credentials::Key {
        key,
        alg: Algorithm::ES384,
        kid,
    })
}

/// The few DER encodings (X.690) a private key needs.
mod der {
    /// Tag, definite length, value.
    pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = value.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(value);
        out
    }

    /// A non-negative INTEGER from its big-endian magnitude.
    pub fn integer(magnitude: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
        let mut v = match trimmed.first() {
            None => vec![0],
            Some(b) if b & 0x80 != 0 => [&[0u8][..], &trimmed].concat(),
            Some(_) => trimmed,
        };
        if v.is_empty() {
            v.push(0);
        }
        tlv(0x02, &v)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWK set's key signs what its PEM's public key verifies.
    #[test]
    fn jwk_sets_sign_like_their_pem() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export");
        for (jwks, public, alg, kid) in [
            ("rsa.jwks.json", "rsa.pub.pem", Algorithm::RS384, "rsa-test"),
            ("ec.jwks.json", "ec.pub.pem", Algorithm::ES384, "ec-test"),
        ] {
            let Credentials::Key {
                key,
                alg: a,
                kid: k,
            } = Credentials::from_key_file(&dir.join(jwks), None).unwrap()
            else {
                panic!("a key");
            };
            assert_eq!((a, k.as_deref()), (alg, Some(kid)));
            let claims =
                serde_json::json!({"sub": "c", "exp": chrono::Utc::now().timestamp() + 60});
            let jwt = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
            let pem = fs_err::read(dir.join(public)).unwrap();
            let decoding = match alg {
                Algorithm::RS384 => jsonwebtoken::DecodingKey::from_rsa_pem(&pem),
                _ => jsonwebtoken::DecodingKey::from_ec_pem(&pem),
            }
            .unwrap();
            let mut v = jsonwebtoken::Validation::new(alg);
            v.required_spec_claims.clear();
            jsonwebtoken::decode::<serde_json::Value>(&jwt, &decoding, &v).unwrap();
        }
        // A kid that is not in the set is named in the error.
        let e = Credentials::from_key_file(&dir.join("ec.jwks.json"), Some("nope".into()));
        let msg = format!("{:#}", e.err().unwrap());
        assert!(msg.contains("kid nope"), "{msg}");
        // The public-only key is never taken for signing.
        let e = Credentials::from_key_file(&dir.join("ec.jwks.json"), Some("ec-public".into()));
        assert!(e.is_err());
        // A public key PEM given as --key says so.
        for public in ["rsa.pub.pem", "ec.pub.pem"] {
            let e = Credentials::from_key_file(&dir.join(public), None)
                .err()
                .unwrap();
            let msg = format!("{e:#}");
            assert!(msg.contains("public key") && msg.contains(public), "{msg}");
        }
    }
}
