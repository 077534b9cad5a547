//! The on-disk key file: every key a server may verify with, and which one signs.
//!
//! ```json
//! {
//!   "format": "usher-jwt-keys/1",
//!   "signing_kid": "eddsa-Q2h3b1T0aXVz",
//!   "keys": [
//!     { "kid": "eddsa-Q2h3b1T0aXVz", "alg": "EdDSA", "created_at": 1795000000,
//!       "private_key_pem": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n" },
//!     { "kid": "hs256-...", "alg": "HS256", "created_at": 1794000000, "secret": "<base64url>" },
//!     { "kid": "es256-...", "alg": "ES256", "created_at": 1793000000,
//!       "public_jwk": { "kty": "EC", "crv": "P-256", "x": "...", "y": "..." } }
//!   ]
//! }
//! ```
//!
//! Each key has exactly one of `private_key_pem` (PKCS#8 PEM, what `openssl genpkey` writes, so
//! keys can be made or inspected with standard tools), `secret` (HS256, ≥ 32 bytes) or
//! `public_jwk` (verify-only). JSON rather than a directory of PEM files because the `kid`,
//! the pinned algorithm and "which key signs" must travel with the key material: a PEM file
//! carries none of them. The file holds private keys: it is written with mode 0600, atomically
//! (temporary file + rename), so a server reloading it never sees half a file.

use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Algorithm;
use super::claims::VerifyOptions;
use super::error::JwtError;
use super::key::{KeyEntry, KeyMaterial, generate};
use super::ring::KeyRing;

/// The `format` marker of the current key file layout.
pub const KEY_FILE_FORMAT: &str = "usher-jwt-keys/1";

/// The contents of a key file (see the module docs for the layout).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyFile {
    /// Always [`KEY_FILE_FORMAT`].
    pub format: String,
    /// The key new tokens are signed with.
    pub signing_kid: String,
    /// Every key, newest last.
    pub keys: Vec<KeyEntry>,
}

impl KeyFile {
    /// A file with one new key of `alg`, which signs.
    pub fn generate(alg: Algorithm) -> Result<Self, JwtError> {
        let key = generate(alg)?;
        Ok(Self {
            format: KEY_FILE_FORMAT.to_owned(),
            signing_kid: key.kid.clone(),
            keys: vec![key],
        })
    }

    /// Rotation: adds a new key of `alg` and makes it the signing key; every existing key stays
    /// for verification, so no issued token stops verifying. Returns the new `kid`.
    pub fn rotate(&mut self, alg: Algorithm) -> Result<String, JwtError> {
        let key = generate(alg)?;
        let kid = key.kid.clone();
        self.keys.push(key);
        self.signing_kid = kid.clone();
        Ok(kid)
    }

    /// Drops the private half of `kid`, keeping its public JWK so tokens it signed still verify
    /// (a key that must never sign again). HS256 keys have no public half; they are unchanged.
    /// Returns whether anything changed. The signing key cannot be demoted.
    pub fn demote(&mut self, kid: &str) -> Result<bool, JwtError> {
        if kid == self.signing_kid {
            return Ok(false);
        }
        let Some(entry) = self.keys.iter_mut().find(|k| k.kid == kid) else {
            return Ok(false);
        };
        if !matches!(entry.material, KeyMaterial::PrivateKeyPem(_)) {
            return Ok(false);
        }
        let jwk = entry.load()?.jwk.ok_or(JwtError::NoSigningKey)?;
        entry.material =
            KeyMaterial::PublicJwk(serde_json::to_value(jwk).map_err(JwtError::Document)?);
        Ok(true)
    }

    /// Removes `kid` once every token it signed has expired. The signing key cannot be retired.
    pub fn retire(&mut self, kid: &str) -> bool {
        if kid == self.signing_kid {
            return false;
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.kid != kid);
        self.keys.len() != before
    }

    /// Parses a key file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, JwtError> {
        let file: Self = serde_json::from_slice(bytes).map_err(JwtError::Document)?;
        if file.format != KEY_FILE_FORMAT {
            return Err(JwtError::UnknownFormat(file.format.clone()));
        }
        Ok(file)
    }

    /// The file as pretty JSON.
    pub fn to_json(&self) -> String {
        // A map of strings and numbers always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A [`KeyRing`] of these keys signing with [`KeyFile::signing_kid`].
    pub fn ring(&self, options: VerifyOptions) -> Result<KeyRing, JwtError> {
        Ok(KeyRing::new(&self.keys, Some(&self.signing_kid))?.with_options(options))
    }
}

/// Reads and parses a key file.
pub fn read_key_file(path: &Path) -> Result<KeyFile, JwtError> {
    let bytes = std::fs::read(path).map_err(|source| JwtError::Io {
        path: path.to_owned(),
        source,
    })?;
    KeyFile::parse(&bytes)
}

/// Writes `file` to `path` atomically (a temporary file in the same directory, then a rename)
/// with mode 0600 on Unix.
pub fn write_key_file(path: &Path, file: &KeyFile) -> Result<(), JwtError> {
    let io = |source| JwtError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keys".to_owned());
    let mut nonce = [0u8; 6];
    aws_lc_rs::rand::fill(&mut nonce).map_err(JwtError::KeyGen)?;
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(file.to_json().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Claims;

    #[test]
    fn write_read_rotate_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut file = KeyFile::generate(Algorithm::EdDSA).unwrap();
        write_key_file(&path, &file).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(read_key_file(&path).unwrap(), file);

        let old_ring = file.ring(VerifyOptions::default()).unwrap();
        let old_token = old_ring.sign(&Claims::new("alice", 100, 300)).unwrap();
        let new_kid = file.rotate(Algorithm::ES256).unwrap();
        write_key_file(&path, &file).unwrap();
        let ring = read_key_file(&path)
            .unwrap()
            .ring(VerifyOptions::default())
            .unwrap();
        assert_eq!(ring.signing_kid(), Some(new_kid.as_str()));
        assert_eq!(
            ring.verify(&old_token, 150).unwrap().sub.as_deref(),
            Some("alice")
        );
        let old_kid = file.keys[0].kid.clone();
        assert!(file.demote(&old_kid).unwrap());
        let ring = file.ring(VerifyOptions::default()).unwrap();
        assert!(
            ring.verify(&old_token, 150).is_ok(),
            "a demoted key still verifies"
        );
        assert!(!file.retire(&new_kid), "the signing key stays");
        assert!(file.retire(&old_kid));
        let ring = file.ring(VerifyOptions::default()).unwrap();
        assert_eq!(
            ring.verify(&old_token, 150),
            Err(crate::jwt::Rejection::UnknownKid)
        );
    }

    #[test]
    fn parse_rejects_bad_files() {
        assert!(matches!(KeyFile::parse(b"{"), Err(JwtError::Document(_))));
        let mut f = KeyFile::generate(Algorithm::HS256).unwrap();
        f.format = "usher-jwt-keys/9".into();
        assert!(matches!(
            KeyFile::parse(f.to_json().as_bytes()),
            Err(JwtError::UnknownFormat(_))
        ));
        assert!(matches!(
            read_key_file(Path::new("/nonexistent/keys.json")),
            Err(JwtError::Io { .. })
        ));
        // Two materials for one key is not a key.
        let two = r#"{"format":"usher-jwt-keys/1","signing_kid":"a","keys":[
            {"kid":"a","alg":"HS256","secret":"x","public_jwk":{}}]}"#;
        assert!(KeyFile::parse(two.as_bytes()).is_err());
    }
}
