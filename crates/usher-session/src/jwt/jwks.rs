//! [`JwksVerifier`]: verify against someone else's published keys, following their rotation.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::claims::{Claims, VerifyOptions};
use super::error::{JwtError, Rejection};
use super::keyset::KeySet;

/// JWKS documents larger than this are refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where a JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file holding a JWKS document.
    File(PathBuf),
    /// An `http://` URL (e.g. `http://127.0.0.1:8080/.well-known/jwks.json`).
    Url(Uri),
}

impl JwksSource {
    /// An `http://` URL source; other schemes are refused (no TLS client here).
    pub fn url(url: &str) -> Result<Self, JwtError> {
        let uri: Uri = url.parse().map_err(|_| JwtError::BadUrl(url.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(JwtError::BadUrl(url.to_owned()));
        }
        Ok(Self::Url(uri))
    }
}

/// Verifies tokens with the keys of a JWKS file or URL.
///
/// A token naming a `kid` the current set lacks makes the verifier refetch the JWKS — the issuer
/// may have rotated — but at most once per [`JwksVerifier::with_min_refetch_interval`] (default
/// 30 s), so a flood of tokens with invented `kid`s costs the issuer one request per interval,
/// not one per token. Concurrent refetches are collapsed into one. A failed refetch keeps the
/// old keys. Keys follow the same pinning rules as a [`super::KeyRing`]; symmetric keys in a
/// JWKS are ignored.
#[derive(Debug)]
pub struct JwksVerifier {
    source: JwksSource,
    options: VerifyOptions,
    min_refetch: Duration,
    timeout: Duration,
    keys: RwLock<Arc<KeySet>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Debug)]
struct FetchState {
    last: Instant,
    count: u64,
}

impl JwksVerifier {
    /// Loads the JWKS once; fails if it cannot be read or parsed.
    pub async fn load(source: JwksSource, options: VerifyOptions) -> Result<Self, JwtError> {
        let timeout = Duration::from_secs(5);
        let keys = fetch(&source, timeout).await?;
        Ok(Self {
            source,
            options,
            min_refetch: Duration::from_secs(30),
            timeout,
            keys: RwLock::new(Arc::new(keys)),
            fetch: tokio::sync::Mutex::new(FetchState {
                last: Instant::now(),
                count: 1,
            }),
        })
    }

    /// At most one refetch per `interval` (default 30 s).
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch = interval;
        self
    }

    /// Timeout of one HTTP fetch (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times the JWKS has been read (the initial load included).
    pub async fn fetches(&self) -> u64 {
        self.fetch.lock().await.count
    }

    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Verifies `token` at `now`; an unknown `kid` triggers a rate-limited refetch and one retry.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Claims, Rejection> {
        let keys = self.current();
        match keys.verify(token, &self.options, now) {
            Err(Rejection::UnknownKid) => {}
            other => return other,
        }
        let mut state = self.fetch.lock().await;
        // Someone else may have refetched while we waited for the lock.
        let latest = self.current();
        if !Arc::ptr_eq(&latest, &keys) {
            drop(state);
            return latest.verify(token, &self.options, now);
        }
        if state.last.elapsed() < self.min_refetch {
            return Err(Rejection::UnknownKid);
        }
        state.last = Instant::now();
        state.count += 1;
        match fetch(&self.source, self.timeout).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                match self.keys.write() {
                    Ok(mut k) => *k = fresh.clone(),
                    Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
                }
                drop(state);
                fresh.verify(token, &self.options, now)
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch failed; keeping the old keys");
                Err(Rejection::UnknownKid)
            }
        }
    }
}

async fn fetch(source: &JwksSource, timeout: Duration) -> Result<KeySet, JwtError> {
    let bytes = match source {
        JwksSource::File(path) => tokio::fs::read(path).await.map_err(|source| JwtError::Io {
            path: path.clone(),
            source,
        })?,
        JwksSource::Url(uri) => tokio::time::timeout(timeout, get(uri))
            .await
            .map_err(|_| fetch_error(uri, "timed out", None))??,
    };
    KeySet::from_jwks(&bytes)
}

fn fetch_error(
    uri: &Uri,
    reason: &str,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> JwtError {
    JwtError::Fetch {
        url: uri.to_string(),
        reason: reason.to_owned(),
        source,
    }
}

async fn get(uri: &Uri) -> Result<Vec<u8>, JwtError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client
        .get(uri.clone())
        .await
        .map_err(|e| fetch_error(uri, "request failed", Some(Box::new(e))))?;
    if !res.status().is_success() {
        return Err(fetch_error(uri, &format!("status {}", res.status()), None));
    }
    let body = Limited::new(res.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| fetch_error(uri, "reading the body failed", Some(e)))?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls() {
        assert!(JwksSource::url("http://127.0.0.1:1/jwks.json").is_ok());
        assert!(matches!(
            JwksSource::url("https://127.0.0.1/x"),
            Err(JwtError::BadUrl(_))
        ));
        assert!(matches!(
            JwksSource::url("/jwks.json"),
            Err(JwtError::BadUrl(_))
        ));
        assert!(matches!(
            JwksSource::url("not a url"),
            Err(JwtError::BadUrl(_))
        ));
    }
}
