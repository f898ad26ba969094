//! Building each store from its URL, the environment and the standard credential chains.
//!
//! `object_store` reads the `AWS_*`, `GOOGLE_*` and `AZURE_*` variables, web identity, instance
//! metadata and application default credentials itself. Two things users expect that it does
//! not read are added here: AWS profiles (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`)
//! and Azure connection strings (`AZURE_STORAGE_CONNECTION_STRING`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{ClientOptions, ObjectStore};
use url::Url;

use super::StoreOptions;

/// What to set when a store refuses our credentials or finds none.
pub fn hint(scheme: &str) -> &'static str {
    match scheme {
        "s3" | "s3a" => {
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or \
             AWS_PROFILE, or run where a role is available (web identity, instance metadata)"
        }
        "gs" => {
            "set GOOGLE_APPLICATION_CREDENTIALS to a service account file, or run \
             `gcloud auth application-default login`"
        }
        _ => {
            "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with \
             AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN"
        }
    }
}

fn endpoint_client(endpoint: &str) -> ClientOptions {
    ClientOptions::new().with_allow_http(endpoint.starts_with("http://"))
}

fn retry(opts: &StoreOptions) -> object_store::RetryConfig {
    let mut r = object_store::RetryConfig::default();
    if let Some(n) = opts.retries {
        r.max_retries = n;
    }
    r
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn s3(url: &Url, opts: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
    // `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` come with from_env, as the AWS CLI reads them;
    // `--endpoint` (below) wins over them.
    if env("AWS_ACCESS_KEY_ID").is_none() {
        if let Some(p) = aws_profile()? {
            b = b
                .with_access_key_id(p.access_key_id)
                .with_secret_access_key(p.secret_access_key);
            if let Some(t) = p.session_token {
                b = b.with_token(t);
            }
        }
    }
    if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        if let Some(r) = aws_profile_region() {
            b = b.with_region(r);
        }
    }
    if let Some(e) = &opts.endpoint {
        b = b.with_endpoint(e).with_client_options(endpoint_client(e));
    }
    Ok(Arc::new(b.with_retry(retry(opts)).build().with_context(
        || format!("cannot use {}: {}", strip(url), hint("s3")),
    )?))
}

pub fn gcs(url: &Url, opts: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
    if let Some(e) = &opts.endpoint {
        b = b
            .with_config(object_store::gcp::GoogleConfigKey::BaseUrl, e)
            .with_client_options(endpoint_client(e));
        if env("GOOGLE_APPLICATION_CREDENTIALS").is_none()
            && env("GOOGLE_SERVICE_ACCOUNT").is_none()
        {
            // An emulator: no credentials (an empty bearer token; object_store's skip_signature
            // is not honoured by every request).
            let anonymous = object_store::gcp::GcpCredential {
                bearer: String::new(),
            };
            b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                anonymous,
            )));
        }
    }
    Ok(Arc::new(b.with_retry(retry(opts)).build().with_context(
        || format!("cannot use {}: {}", strip(url), hint("gs")),
    )?))
}

pub fn azure(url: &Url, opts: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let mut b = MicrosoftAzureBuilder::from_env();
    let mut endpoint = opts.endpoint.clone();
    if let Some(cs) = env("AZURE_STORAGE_CONNECTION_STRING") {
        let c = ConnectionString::parse(&cs);
        if let Some(a) = &c.account {
            b = b.with_account(a);
        }
        if let Some(k) = c.key {
            b = b.with_access_key(k);
        }
        if let Some(s) = c.sas {
            b = b.with_config(object_store::azure::AzureConfigKey::SasKey, s);
        }
        if c.development {
            b = b.with_use_emulator(true);
        }
        endpoint = endpoint.or(c.blob_endpoint);
    }
    b = b.with_url(url.as_str());
    if let Some(e) = &endpoint {
        b = b
            .with_endpoint(e.trim_end_matches('/').to_string())
            .with_client_options(endpoint_client(e));
    }
    Ok(Arc::new(b.with_retry(retry(opts)).build().with_context(
        || format!("cannot use {}: {}", strip(url), hint("az")),
    )?))
}

/// The URL without user information or query (where credentials could hide).
fn strip(url: &Url) -> String {
    super::redact(url.as_str())
}

/// The fields of an Azure storage connection string that a blob client needs.
#[derive(Debug, Default, PartialEq)]
struct ConnectionString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    blob_endpoint: Option<String>,
    development: bool,
}

impl ConnectionString {
    fn parse(s: &str) -> Self {
        let fields: HashMap<String, String> = s
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
        let account = get("accountname");
        let blob_endpoint = get("blobendpoint").or_else(|| {
            let account = account.as_ref()?;
            let protocol = get("defaultendpointsprotocol").unwrap_or("https".into());
            let suffix = get("endpointsuffix").unwrap_or("core.windows.net".into());
            Some(format!("{protocol}://{account}.blob.{suffix}"))
        });
        let development = get("usedevelopmentstorage").is_some_and(|v| v == "true");
        ConnectionString {
            account,
            key: get("accountkey"),
            sas: get("sharedaccesssignature"),
            blob_endpoint: match development {
                true => None,
                false => blob_endpoint,
            },
            development,
        }
    }
}

/// Static keys of an AWS profile.
struct AwsProfile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn profile_name() -> String {
    env("AWS_PROFILE")
        .or_else(|| env("AWS_DEFAULT_PROFILE"))
        .unwrap_or("default".into())
}

/// Sections of an INI file: name → key → value.
fn ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn aws_file(var: &str, default: &str) -> Option<String> {
    let path = env(var)
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws").join(default)))?;
    fs_err::read_to_string(path).ok()
}

/// The profile's keys from `~/.aws/credentials` (or `[profile NAME]` of `~/.aws/config`). An
/// `AWS_PROFILE` that names no profile with keys is an error; a missing default profile is not.
fn aws_profile() -> Result<Option<AwsProfile>> {
    let name = profile_name();
    let mut sections = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .map(|t| ini(&t))
        .unwrap_or_default();
    let config = aws_file("AWS_CONFIG_FILE", "config")
        .map(|t| ini(&t))
        .unwrap_or_default();
    let section = sections.remove(&name).or_else(|| {
        let key = match name.as_str() {
            "default" => "default".to_string(),
            n => format!("profile {n}"),
        };
        config.get(&key).cloned()
    });
    let keys = section.and_then(|s| {
        Some(AwsProfile {
            access_key_id: s.get("aws_access_key_id")?.clone(),
            secret_access_key: s.get("aws_secret_access_key")?.clone(),
            session_token: s.get("aws_session_token").cloned(),
        })
    });
    if keys.is_none() && env("AWS_PROFILE").is_some() {
        anyhow::bail!(
            "AWS_PROFILE={name}: no such profile with aws_access_key_id and \
             aws_secret_access_key in ~/.aws/credentials or ~/.aws/config (profiles that assume \
             roles or use SSO are not read: export the keys, e.g. with \
             `aws configure export-credentials --format env`)"
        );
    }
    Ok(keys)
}

fn aws_profile_region() -> Option<String> {
    let name = profile_name();
    let config = ini(&aws_file("AWS_CONFIG_FILE", "config")?);
    let key = match name.as_str() {
        "default" => "default".to_string(),
        n => format!("profile {n}"),
    };
    config.get(&key)?.get("region").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azurite_connection_string() {
        let c = ConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        );
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(c.key.as_deref(), Some("a2V5"));
        assert_eq!(
            c.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
    }

    #[test]
    fn cloud_connection_string() {
        let c = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=acct;SharedAccessSignature=sv=1&sig=x;\
             EndpointSuffix=core.windows.net",
        );
        assert_eq!(c.sas.as_deref(), Some("sv=1&sig=x"));
        assert_eq!(
            c.blob_endpoint.as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        assert!(ConnectionString::parse("UseDevelopmentStorage=true").development);
    }

    #[test]
    fn ini_sections() {
        let s = ini("[default]\naws_access_key_id = A\n# c\n[profile x]\nregion=eu-west-1\n");
        assert_eq!(s["default"]["aws_access_key_id"], "A");
        assert_eq!(s["profile x"]["region"], "eu-west-1");
    }
}
