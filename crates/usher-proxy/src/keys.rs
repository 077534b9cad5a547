//! Affinity key files: loading them, and making new keys (`usher lb keygen`).

use std::path::{Path, PathBuf};

use usher_balancer::{AffinityKey, KeyFileError, KeyRing};

/// A key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Unreadable.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Malformed (the error names the line).
    #[error("key file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Which line and why.
        source: KeyFileError,
    },
}

/// The key ring from `path`, or — with no file — a random single-key ring, with a warning when
/// `cookie_mode` (cookies then only work with this one process and die with it).
pub fn load_keys(path: Option<&Path>, cookie_mode: bool) -> Result<KeyRing, KeyError> {
    let Some(path) = path else {
        if cookie_mode {
            tracing::warn!(
                "no --key-file: using a random affinity key; cookies will not be readable by other \
             replicas or after a restart (make one with `usher lb keygen --out FILE`)"
            );
        }
        return Ok(single(generate_key(rand::random())));
    };
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    KeyRing::parse(&text).map_err(|source| KeyError::Parse {
        path: path.to_owned(),
        source,
    })
}

fn single(key: AffinityKey) -> KeyRing {
    match KeyRing::new(vec![key]) {
        Ok(ring) => ring,
        // A one-key ring is never empty and has no duplicate ids.
        Err(e) => unreachable!("single-key ring rejected: {e}"),
    }
}

/// A new random key with id `id`, from the operating system's CSPRNG via `rand`.
pub fn generate_key(id: u32) -> AffinityKey {
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
    AffinityKey::from_bytes(id, secret)
}
