//! `--web-config FILE`: the Prometheus exporter-toolkit web configuration (YAML), the part
//! kvmscope supports: TLS with a certificate and key (`tls_server_config`) and HTTP basic
//! auth with bcrypt hashes (`basic_auth_users`). Anything else in the file is refused by name,
//! so a setting is never silently ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("web config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("web config {path}: cannot load {what} {file}: {message}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        file: PathBuf,
        message: String,
    },
    #[error("web config {path}: {message}")]
    Tls { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
}

/// A loaded web config: what the server needs at run time.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    /// TLS server settings, when `tls_server_config` is given.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Basic auth, when `basic_auth_users` is not empty.
    pub auth: Option<Arc<BasicAuth>>,
}

impl WebConfig {
    /// Reads and checks `path`: the YAML, the certificate and key, every bcrypt hash.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse = |message: String| WebConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        // An empty file is a valid config that turns nothing on.
        let file: File = if text.trim().is_empty() {
            File {
                tls_server_config: None,
                basic_auth_users: HashMap::new(),
            }
        } else {
            serde_norway::from_str(&text).map_err(|e| parse(e.to_string()))?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match file.tls_server_config {
            None => None,
            Some(t) => Some(Arc::new(tls_config(path, base, &t)?)),
        };
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &file.basic_auth_users {
                hash.parse::<bcrypt::HashParts>().map_err(|_| {
                    parse(format!("basic_auth_users.{user} is not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)"))
                })?;
            }
            Some(Arc::new(BasicAuth::new(file.basic_auth_users)))
        };
        Ok(WebConfig { tls, auth })
    }
}

/// Relative paths in the config are relative to the config file, as in exporter-toolkit.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn tls_config(
    path: &Path,
    base: &Path,
    t: &TlsFile,
) -> Result<rustls::ServerConfig, WebConfigError> {
    let tls_err = |message: String| WebConfigError::Tls {
        path: path.to_path_buf(),
        message,
    };
    match t.client_auth_type.as_deref() {
        None | Some("NoClientCert") => {}
        Some(other) => {
            return Err(tls_err(format!(
                "client_auth_type {other} is not supported (only NoClientCert)"
            )))
        }
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            return Err(tls_err(format!(
                "min_version {other} is not supported (TLS12 or TLS13)"
            )))
        }
    };
    let cert_file = resolve(base, &t.cert_file);
    let key_file = resolve(base, &t.key_file);
    let pem_err = |what: &'static str, file: &Path, message: String| WebConfigError::Pem {
        path: path.to_path_buf(),
        what,
        file: file.to_path_buf(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .map_err(|e| pem_err("certificate", &cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err("certificate", &cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(
            "certificate",
            &cert_file,
            "no CERTIFICATE block in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| pem_err("key", &key_file, e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| tls_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(format!("certificate and key do not go together: {e}")))
}

/// HTTP basic auth against bcrypt hashes. A bcrypt check costs tens of ms by design, so a
/// password that passed once is remembered per user and later requests compare against it.
#[derive(Debug)]
pub struct BasicAuth {
    users: HashMap<String, String>,
    verified: Mutex<HashMap<String, Vec<u8>>>,
}

impl BasicAuth {
    pub fn new(users: HashMap<String, String>) -> Self {
        BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Does the `Authorization` header value let the request in?
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = verified.get(&user) {
                if constant_time_eq(known, password.as_bytes()) {
                    return true;
                }
            }
        }
        if bcrypt::verify(&password, hash).unwrap_or(false) {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(user, password.into_bytes());
            return true;
        }
        false
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Equal-length comparison whose time does not depend on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}").into_bytes()
    }

    #[test]
    fn basic_auth_checks_bcrypt_hashes_and_remembers_a_good_password() {
        // Cost 4, the smallest bcrypt allows: the test checks logic, not hashing time.
        let hash = bcrypt::hash_with_result("s3cret", 4)
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoY);
        let auth = BasicAuth::new(HashMap::from([("prom".to_string(), hash)]));
        assert!(!auth.allows(None));
        assert!(!auth.allows(Some(b"Bearer abc")));
        assert!(!auth.allows(Some(&basic("prom", "wrong"))));
        assert!(!auth.allows(Some(&basic("nobody", "s3cret"))));
        assert!(auth.allows(Some(&basic("prom", "s3cret"))));
        // Remembered, and a wrong password is still refused afterwards.
        assert!(auth.allows(Some(&basic("prom", "s3cret"))));
        assert!(!auth.allows(Some(&basic("prom", "s3cre"))));
        assert!(!auth.allows(Some(b"Basic !!!not-base64")));
    }

    #[test]
    fn the_config_refuses_what_it_does_not_support_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |text: &str| {
            let p = dir.path().join("web.yml");
            std::fs::write(&p, text).expect("write");
            p
        };
        let err = |text: &str| {
            WebConfig::load(&write(text))
                .expect_err("must be refused")
                .to_string()
        };
        assert!(err("http_server_config: {http2: true}\n").contains("http_server_config"));
        assert!(err("basic_auth_users: {prom: plain}\n").contains("not a bcrypt hash"));
        let e = err("tls_server_config: {cert_file: c.pem, key_file: k.pem}\n");
        assert!(
            e.contains("cannot load certificate") && e.contains("c.pem"),
            "{e}"
        );
        let e = err("tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireAndVerifyClientCert}\n");
        assert!(e.contains("client_auth_type"), "{e}");
        let cfg = WebConfig::load(&write("")).expect("empty config");
        assert!(cfg.tls.is_none() && cfg.auth.is_none());
    }
}
