//! The state directory: persistent vGPU definitions, one TOML file each,
//! as mdevctl keeps its definitions.
//!
//! ```text
//! <state dir>/            0755, created with its parents
//!   vgpus/                0700
//!     <uuid>.toml         one definition, named by its lower-case UUID
//!     .vgpud-tmp-…        a write in progress; removed by `open` if left
//! ```
//!
//! Writes are crash-safe: a definition is written to a temporary file in
//! `vgpus/`, synced, renamed over `<uuid>.toml`, and the directory synced,
//! so a file is always either its old or its new content, and a save that
//! returned survives a crash. The format, protocol and bounds are
//! documented in `docs/state-directory.md`.

mod definition;
mod error;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

pub use definition::{Definition, KEYS};
pub use error::StateError;

use crate::config::Diagnostic;

/// Largest definition file `load` reads, in bytes. What vgpud writes is
/// under 2 KiB; anything near this is not its file.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Most definitions a state directory may hold: `save` refuses a new one
/// beyond it and `load` refuses a directory holding more.
pub const MAX_DEFINITIONS: usize = 4096;
/// Longest string value of a definition, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// Name prefix of the temporary files of writes in progress.
pub const TEMP_PREFIX: &str = ".vgpud-tmp-";
/// Ignored files named one by one before the rest are only counted, so a
/// directory full of strangers does not flood the log.
const MAX_IGNORED_LOGGED: usize = 16;

const DIR_MODE: u32 = 0o755;
const VGPUS_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// An opened state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    vgpus: PathBuf,
    /// Held across a save's count-and-rename, so that concurrent saves of
    /// new definitions cannot together pass [`MAX_DEFINITIONS`].
    writing: Mutex<()>,
}

/// Tells apart the temporary files of concurrent saves in one process.
static TEMP_SERIAL: AtomicU64 = AtomicU64::new(0);

impl StateDir {
    /// Opens the state directory at `path`, creating it (0755, with its
    /// parents) and `vgpus/` (0700) when missing, and removing the
    /// temporary files an interrupted write left behind.
    pub fn open(path: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let path = path.into();
        let vgpus = path.join("vgpus");
        create_dir(&path, DIR_MODE, true)?;
        if create_dir(&vgpus, VGPUS_MODE, false)? {
            sync_dir(&path)?;
        }
        let state = StateDir {
            path,
            vgpus,
            writing: Mutex::new(()),
        };
        state.remove_leftovers()?;
        Ok(state)
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file of the definition `uuid`.
    pub fn path_of(&self, uuid: Uuid) -> PathBuf {
        self.vgpus.join(format!("{}.toml", uuid.hyphenated()))
    }

    /// Every definition, sorted by UUID. Files not named `<uuid>.toml` are
    /// ignored with a warning; every problem of every invalid file is
    /// returned at once in [`StateError::Invalid`].
    pub fn load(&self) -> Result<Vec<Definition>, StateError> {
        let mut files = Vec::new();
        let mut ignored = 0usize;
        for entry in self.entries()? {
            let (name, file_type) = entry;
            if name.starts_with(TEMP_PREFIX) {
                // A save of this process in flight; `open` removes those
                // that a crash left.
                continue;
            }
            let Some(uuid) = definition_uuid(&name) else {
                ignored += 1;
                if ignored <= MAX_IGNORED_LOGGED {
                    tracing::warn!(
                        file = %self.vgpus.join(&name).display(),
                        "ignoring a file of the state directory not named <uuid>.toml (lower-case UUID)"
                    );
                }
                continue;
            };
            files.push((uuid, file_type));
        }
        if ignored > MAX_IGNORED_LOGGED {
            tracing::warn!(
                dir = %self.vgpus.display(),
                more = ignored - MAX_IGNORED_LOGGED,
                "ignoring more files not named <uuid>.toml"
            );
        }
        if files.len() > MAX_DEFINITIONS {
            return Err(StateError::TooMany {
                path: self.vgpus.clone(),
                count: files.len(),
            });
        }
        files.sort_by_key(|(uuid, _)| *uuid);

        let mut definitions = Vec::with_capacity(files.len());
        let mut problems: Vec<Diagnostic> = Vec::new();
        for (uuid, file_type) in files {
            let path = self.path_of(uuid);
            if !file_type.is_file() {
                problems.push(Diagnostic {
                    location: crate::config::Location {
                        path,
                        line: 1,
                        column: 1,
                    },
                    problem: "not a regular file".into(),
                    help: Some("a definition is a plain file: move this away".into()),
                });
                continue;
            }
            let bytes = read_bounded(&path)?;
            match Definition::parse(&path, uuid, &bytes) {
                Ok(d) => definitions.push(d),
                Err(d) => problems.extend(d),
            }
        }
        if problems.is_empty() {
            Ok(definitions)
        } else {
            Err(StateError::Invalid(problems))
        }
    }

    /// Writes `definition` to its file, replacing any previous one, so
    /// that at every moment the file holds either the old or the new
    /// content; when it returns `Ok` the new content survives a crash.
    pub fn save(&self, definition: &Definition) -> Result<(), StateError> {
        let path = self.path_of(definition.uuid);
        let text = definition
            .render()
            .map_err(|problem| StateError::Unsavable {
                path: path.clone(),
                problem,
            })?;
        let write_error = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if !path.exists() && self.count()? >= MAX_DEFINITIONS {
            return Err(StateError::Full { path });
        }
        let temp = self.vgpus.join(format!(
            "{TEMP_PREFIX}{}-{}-{}",
            definition.uuid.hyphenated(),
            std::process::id(),
            TEMP_SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, &path)
        })();
        if let Err(e) = written {
            // The old file is untouched; the temporary one is ours to
            // drop, and `open` would remove it anyway.
            let _ = fs::remove_file(&temp);
            return Err(write_error(e));
        }
        sync_dir(&self.vgpus).map_err(|e| match e {
            StateError::ReadDir { source, .. } => write_error(source),
            other => other,
        })
    }

    /// Removes the definition `uuid`; when it returns `Ok` the removal
    /// survives a crash.
    pub fn remove(&self, uuid: Uuid) -> Result<(), StateError> {
        let path = self.path_of(uuid);
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StateError::NotFound { path });
            }
            Err(source) => return Err(StateError::Remove { path, source }),
        }
        sync_dir(&self.vgpus).map_err(|e| match e {
            StateError::ReadDir { source, .. } => StateError::Remove { path, source },
            other => other,
        })
    }

    /// The names and types of the entries of `vgpus/`, in name order.
    fn entries(&self) -> Result<Vec<(String, fs::FileType)>, StateError> {
        let read_error = |source| StateError::ReadDir {
            path: self.vgpus.clone(),
            source,
        };
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.vgpus).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let file_type = entry.file_type().map_err(read_error)?;
            // A name that is not UTF-8 is not `<uuid>.toml`; lossy keeps it
            // visible in the warning.
            entries.push((entry.file_name().to_string_lossy().into_owned(), file_type));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    fn count(&self) -> Result<usize, StateError> {
        Ok(self
            .entries()?
            .iter()
            .filter(|(name, _)| definition_uuid(name).is_some())
            .count())
    }

    fn remove_leftovers(&self) -> Result<(), StateError> {
        let mut removed = false;
        for (name, _) in self.entries()? {
            if !name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = self.vgpus.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed the temporary file of an interrupted write");
                    removed = true;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(StateError::RemoveLeftover { path, source }),
            }
        }
        if removed {
            sync_dir(&self.vgpus)?;
        }
        Ok(())
    }
}

/// The UUID a definition file is named for: exactly `<uuid>.toml` with the
/// UUID lower-case and hyphenated, as `save` names them.
fn definition_uuid(name: &str) -> Option<Uuid> {
    let stem = name.strip_suffix(".toml")?;
    let uuid = Uuid::try_parse(stem).ok()?;
    (uuid.hyphenated().to_string() == stem).then_some(uuid)
}

/// Creates `path` with `mode` when missing; says whether it did. The mode
/// is set again after creation because the umask may have narrowed it.
fn create_dir(path: &Path, mode: u32, parents: bool) -> Result<bool, StateError> {
    let create_error = |source| StateError::Create {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Ok(false);
    }
    match DirBuilder::new().recursive(parents).mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => return Ok(false),
        Err(e) => return Err(create_error(e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(create_error)?;
    Ok(true)
}

/// Makes the directory's entries (a rename, an unlink) durable.
fn sync_dir(path: &Path) -> Result<(), StateError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| StateError::ReadDir {
            path: path.to_path_buf(),
            source,
        })
}

/// The file's bytes, at most one more than [`MAX_FILE_BYTES`] so that an
/// oversized file is refused without reading it whole.
fn read_bounded(path: &Path) -> Result<Vec<u8>, StateError> {
    let read_error = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    Ok(bytes)
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
