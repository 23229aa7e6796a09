//! Why the state directory could not be opened, read or written.

use std::path::PathBuf;

use crate::config::Diagnostic;

use super::MAX_DEFINITIONS;

/// What went wrong with the state directory. Every variant names the path
/// it is about and says what would fix it; the operating system's reason
/// is the `source`, not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory or its `vgpus/` could not be created.
    #[error(
        "cannot create the state directory {}: check that vgpud runs as root or owns its parent",
        path.display()
    )]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be listed or synced.
    #[error(
        "cannot read the state directory {}: check its permissions and the file system",
        path.display()
    )]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A leftover temporary file of an interrupted write could not be
    /// removed.
    #[error(
        "cannot remove the leftover temporary file {}: remove it by hand while vgpud is stopped",
        path.display()
    )]
    RemoveLeftover {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A definition file could not be read.
    #[error(
        "cannot read the definition {}: check its permissions, or move it away to drop the definition",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One or more definition files are not valid. Holds every problem of
    /// every file, in file and then line order, so one pass fixes them all.
    #[error("{}", crate::config::Diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
    /// The directory holds more definitions than a daemon loads.
    #[error(
        "the state directory {} holds {count} definitions, more than the {MAX_DEFINITIONS} vgpud loads: \
         move some <uuid>.toml files away while vgpud is stopped",
        path.display()
    )]
    TooMany { path: PathBuf, count: usize },
    /// A new definition would exceed [`MAX_DEFINITIONS`].
    #[error(
        "cannot save {}: the state directory already holds {MAX_DEFINITIONS} definitions, \
         the most it may; undefine one first",
        path.display()
    )]
    Full { path: PathBuf },
    /// A definition to save has a value that could not be read back.
    #[error("cannot save {}: {problem}", path.display())]
    Unsavable { path: PathBuf, problem: String },
    /// Writing, syncing or renaming a definition failed; the previous
    /// content of the file, if any, is intact.
    #[error(
        "cannot write {}: check free space and permissions of the state directory; \
         the previous definition, if any, is unchanged",
        path.display()
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Unlinking a definition failed.
    #[error(
        "cannot remove {}: check permissions of the state directory",
        path.display()
    )]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// There is no definition with this UUID.
    #[error(
        "no definition {}: the UUID is not defined, or was removed already",
        path.display()
    )]
    NotFound { path: PathBuf },
}

impl StateError {
    /// The individual problems of [`StateError::Invalid`], empty otherwise.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            StateError::Invalid(d) => d,
            _ => &[],
        }
    }
}
