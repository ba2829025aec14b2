//! Outputs appear only when complete: written to a temporary file beside the target, synced,
//! then renamed over it.
//!
//! A writer killed before the rename (kill -9, power loss) leaves its temporary file behind
//! under a name no reader mistakes for the output: `.NAME.XXXXXX.partial`. Each temporary file
//! is locked (flock) while its writer lives, so a later run can tell abandoned ones from ones
//! being written by another process, and removes the abandoned ones (they can be as large as the
//! model).

use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

const SUFFIX: &str = ".partial";

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn prefix_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    format!(".{name}.")
}

/// A temporary file in the target's folder (a rename across file systems would not be atomic),
/// locked for as long as it is open. Abandoned temporary files of the same target are removed
/// first.
pub fn temp_beside(path: &Path) -> Result<NamedTempFile> {
    let dir = dir_of(path);
    remove_stale_temps(path);
    let tmp = tempfile::Builder::new()
        .prefix(&prefix_of(path))
        .suffix(SUFFIX)
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    // Only fails where the file system has no locks; then stale files are merely kept.
    let _ = tmp.as_file().try_lock();
    Ok(tmp)
}

/// Removes the temporary files of `path` that no living writer holds (left by a run that was
/// killed), and returns their paths. Files it cannot inspect are left alone.
pub fn remove_stale_temps(path: &Path) -> Vec<PathBuf> {
    let prefix = prefix_of(path);
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(&prefix) && name.ends_with(SUFFIX)) {
            continue;
        }
        let p = entry.path();
        let Ok(f) = File::open(&p) else { continue };
        // A lock we can take is a lock nobody holds: its writer is gone.
        if f.try_lock().is_ok() && std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// Syncs and renames the finished file into place, readable like any file the user creates.
pub fn persist(tmp: NamedTempFile, path: &Path) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| path.display().to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| path.display().to_string())?;
    }
    tmp.persist(path).map_err(|e| {
        anyhow::anyhow!("{}: cannot rename into place: {}", path.display(), e.error)
    })?;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes)
        .with_context(|| path.display().to_string())?;
    persist(tmp, path)
}
