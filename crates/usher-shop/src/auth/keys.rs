//! The shop's JWT key file: loaded, created on first start, or made and rotated by
//! `usher shop keygen`.
//!
//! Several shops started together with the same `--jwt-keys` path must end up with one key, or
//! a token signed by one would be refused by the others. So a missing file is created with
//! *create-new* semantics: each starter writes a complete file under a private temporary name and
//! then hard-links it to the real name, which fails if the name exists. Exactly one link wins;
//! the losers delete their temporary file and read the winner's. Nobody ever sees a half-written
//! file (the link appears only once the content is complete), and nobody overwrites a file
//! another process already uses.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use usher_session::jwt::{Algorithm, JwtError, KeyFile, read_key_file, write_key_file};

/// What [`load_or_create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The file existed (or another process created it first).
    Loaded,
    /// This process created it.
    Created,
}

fn is_not_found(e: &JwtError) -> bool {
    matches!(e, JwtError::Io { source, .. } if source.kind() == ErrorKind::NotFound)
}

fn io(path: &Path, source: std::io::Error) -> JwtError {
    JwtError::Io {
        path: path.to_owned(),
        source,
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "keys".to_owned(), |n| n.to_string_lossy().into_owned());
    let nonce: u64 = rand::random();
    path.with_file_name(format!(".{name}.{}.{nonce:016x}.new", std::process::id()))
}

/// Reads the key file at `path`, or creates it with one new `alg` key if it does not exist
/// (atomically: see the module docs).
pub fn load_or_create(path: &Path, alg: Algorithm) -> Result<(KeyFile, Origin), JwtError> {
    match read_key_file(path) {
        Ok(file) => return Ok((file, Origin::Loaded)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    let file = KeyFile::generate(alg)?;
    let tmp = temp_name(path);
    write_key_file(&tmp, &file)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((file, Origin::Created)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Ok((read_key_file(path)?, Origin::Loaded))
        }
        Err(e) => Err(io(path, e)),
    }
}

/// `usher shop keygen`: creates `path` with one `alg` key, or, if it exists, rotates — adds a
/// new `alg` key that signs from now on and keeps every old key for verification, so tokens
/// already issued stay valid. Returns the new key's `kid` and whether this was a rotation.
pub fn keygen(path: &Path, alg: Algorithm) -> Result<(String, bool), JwtError> {
    match read_key_file(path) {
        Ok(mut file) => {
            let kid = file.rotate(alg)?;
            write_key_file(path, &file)?;
            Ok((kid, true))
        }
        Err(e) if is_not_found(&e) => {
            let file = KeyFile::generate(alg)?;
            write_key_file(path, &file)?;
            Ok((file.signing_kid, false))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racing_creators_end_up_with_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.json");
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| s.spawn(|| load_or_create(&path, Algorithm::EdDSA).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = results
            .iter()
            .filter(|(_, o)| *o == Origin::Created)
            .count();
        assert_eq!(created, 1, "exactly one creator wins");
        let kid = &results[0].0.signing_kid;
        assert!(results.iter().all(|(f, _)| &f.signing_kid == kid));
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn keygen_creates_then_rotates_keeping_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.json");
        let (first, rotated) = keygen(&path, Algorithm::EdDSA).unwrap();
        assert!(!rotated);
        let (second, rotated) = keygen(&path, Algorithm::ES256).unwrap();
        assert!(rotated);
        let file = read_key_file(&path).unwrap();
        assert_eq!(file.signing_kid, second);
        assert!(file.keys.iter().any(|k| k.kid == first));
        // A damaged file is an error, not a silent new key.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(keygen(&path, Algorithm::EdDSA).is_err());
        assert!(load_or_create(&path, Algorithm::EdDSA).is_err());
    }
}
