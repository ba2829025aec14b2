//! Row cache: each measured row is saved as JSON under `OUT/cache/`, named by a hash of
//! everything that decides its result (the model file's path, size and modification time, the
//! format, device, threads, engine and its binary, settings, data files and qbench's version),
//! so an interrupted run resumes where it stopped and a changed input or a rebuilt `qrun` is
//! measured again.

use super::rows::Measured;
use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Path, size and modification time of a file (or `missing`), for cache keys.
pub fn file_identity(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{}:{}", path.display(), m.len(), mtime)
        }
        Err(_) => format!("{}:missing", path.display()),
    }
}

/// Identity of a Hugging Face folder: its config and weight files.
pub fn dir_identity(dir: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap_or_default().to_string_lossy();
                    n.ends_with(".safetensors") || n.ends_with(".json")
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| file_identity(p))
        .collect::<Vec<_>>()
        .join("|")
}

/// A short hex digest of any serializable value.
pub fn key_of<T: Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let d = Sha256::digest(&bytes);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub struct RowCache {
    dir: PathBuf,
    /// `--fresh`: never read, always overwrite.
    fresh: bool,
}

impl RowCache {
    pub fn new(dir: PathBuf, fresh: bool) -> RowCache {
        RowCache { dir, fresh }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str, key: &str) -> PathBuf {
        // The readable part only helps people browsing the folder; the key decides.
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.{key}.json"))
    }

    /// The cached row, if any and readable (an unreadable one is measured again).
    pub fn get(&self, name: &str, key: &str) -> Option<Measured> {
        if self.fresh {
            return None;
        }
        let s = std::fs::read(self.path(name, key)).ok()?;
        let m: Measured = serde_json::from_slice(&s).ok()?;
        (m.key == key && m.error.is_none()).then_some(m)
    }

    /// Saves a successful row (failed ones are measured again next time).
    pub fn put(&self, name: &str, m: &Measured) -> Result<()> {
        if m.error.is_some() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(m).context("serializing a row")?;
        super::write_atomic(&self.path(name, &m.key), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let c = RowCache::new(dir.path().to_path_buf(), false);
        let m = Measured {
            key: key_of(&("a", 1)),
            model: "m".into(),
            ppl: Some(3.5),
            ..Measured::default()
        };
        assert!(c.get("m/F16", &m.key).is_none());
        c.put("m/F16", &m).unwrap();
        assert_eq!(c.get("m/F16", &m.key).unwrap().ppl, Some(3.5));
        assert!(c.get("m/F16", &key_of(&("a", 2))).is_none());
        assert!(RowCache::new(dir.path().to_path_buf(), true)
            .get("m/F16", &m.key)
            .is_none());
        // Failed rows are not cached.
        let bad = Measured {
            key: "k2".into(),
            error: Some("x".into()),
            ..Measured::default()
        };
        c.put("m/Q8_0", &bad).unwrap();
        assert!(c.get("m/Q8_0", "k2").is_none());
    }

    #[test]
    fn identity_changes_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let missing = file_identity(&p);
        std::fs::write(&p, b"abc").unwrap();
        let a = file_identity(&p);
        std::fs::write(&p, b"abcd").unwrap();
        assert_ne!(a, file_identity(&p));
        assert_ne!(a, missing);
    }
}
