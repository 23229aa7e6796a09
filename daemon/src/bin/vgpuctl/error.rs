//! What can go wrong for `vgpuctl`, the exit code each outcome has and the
//! hint that tells the operator what to do about it.

use std::path::PathBuf;
use std::process::ExitCode;

use vgpud::control::protocol::ErrorKind;

/// Why a verb failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No socket, connection refused, permission denied.
    #[error("cannot reach vgpud at {}", path.display())]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Connected, but no answer came in time, or the connection broke.
    #[error("vgpud at {} did not answer", path.display())]
    NoAnswer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Connected, but the daemon closed the connection without answering.
    #[error("vgpud at {} closed the connection without answering", path.display())]
    Closed { path: PathBuf },
    /// The answer is not a response, or its result not the command's.
    #[error("vgpud sent a malformed answer to {command}")]
    Malformed {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    /// The answer has neither a result nor an error, or a PNG that is not
    /// base64.
    #[error("vgpud sent a malformed answer to {command}: {what}")]
    Incomplete { command: String, what: String },
    /// The daemon refused or failed the request.
    #[error("{message}")]
    Daemon { kind: ErrorKind, message: String },
    #[error("cannot write {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Standard output went away (a closed pipe) or a terminal signal
    /// handler could not be set up.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

/// The exit codes of docs/operations.md ("Exit codes").
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONFLICT: u8 = 4;
    pub const INSUFFICIENT_RESOURCES: u8 = 5;
    pub const BUSY: u8 = 6;
    pub const UNREACHABLE: u8 = 7;
    pub const NO_SCANOUT: u8 = 8;
}

impl CtlError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    fn code(&self) -> u8 {
        match self {
            CtlError::Unreachable { .. } | CtlError::NoAnswer { .. } | CtlError::Closed { .. } => {
                exit::UNREACHABLE
            }
            CtlError::Malformed { .. }
            | CtlError::Incomplete { .. }
            | CtlError::WriteFile { .. }
            | CtlError::Output(_) => exit::FAILED,
            CtlError::Daemon { kind, .. } => match kind {
                ErrorKind::Failed => exit::FAILED,
                ErrorKind::BadRequest
                | ErrorKind::UnsupportedVersion
                | ErrorKind::UnknownCommand
                | ErrorKind::BadArguments => exit::USAGE,
                ErrorKind::NotFound => exit::NOT_FOUND,
                ErrorKind::Conflict => exit::CONFLICT,
                ErrorKind::InsufficientResources => exit::INSUFFICIENT_RESOURCES,
                ErrorKind::Busy => exit::BUSY,
                ErrorKind::NoScanout => exit::NO_SCANOUT,
            },
        }
    }

    /// What to do about it, for the verb `verb`; none when the message
    /// says it all.
    pub fn hint(&self, verb: &str) -> Option<String> {
        let hint = match self {
            CtlError::Unreachable { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                "the control socket is root-only unless the configuration's control_group is \
                 set: run as root or as a member of that group"
                    .into()
            }
            CtlError::Unreachable { .. } | CtlError::Closed { .. } => {
                "check that vgpud runs (systemctl status vgpud) and that --runtime-dir or \
                 VGPUD_RUNTIME_DIR names its runtime directory (default /run/vgpud)"
                    .into()
            }
            CtlError::NoAnswer { .. } => {
                "vgpud may be overloaded or stuck; see its log (journalctl -u vgpud)".into()
            }
            CtlError::Malformed { .. } | CtlError::Incomplete { .. } => {
                "vgpud and vgpuctl may be of different versions: compare `vgpuctl version` with \
                 `vgpuctl --version`"
                    .into()
            }
            CtlError::WriteFile { .. } | CtlError::Output(_) => return None,
            CtlError::Daemon { kind, .. } => return daemon_hint(*kind, verb),
        };
        Some(hint)
    }
}

fn daemon_hint(kind: ErrorKind, verb: &str) -> Option<String> {
    let hint = match (kind, verb) {
        (ErrorKind::Busy, "remove" | "stop") => {
            "a VM is attached; stop it first, or use --force to disconnect it"
        }
        (ErrorKind::Busy, _) => {
            "the daemon is doing as much of this as it allows at once; try again"
        }
        (ErrorKind::NotFound, _) => "see `vgpuctl list --defined` for the vGPUs there are",
        (ErrorKind::Conflict, "remove") => {
            "remove takes down transient vGPUs: a defined one is stopped with `vgpuctl stop` and \
             deleted with `vgpuctl undefine`; one of the configuration file is removed by editing \
             the file and reloading vgpud"
        }
        (ErrorKind::Conflict, _) => {
            "see `vgpuctl list --defined` for what exists and its origin; vGPUs of the \
             configuration file are changed by editing the file and reloading vgpud"
        }
        (ErrorKind::InsufficientResources, _) => {
            "see `vgpuctl types` for what still fits on each GPU, and `vgpuctl list` for the \
             free VRAM"
        }
        (ErrorKind::UnknownCommand | ErrorKind::UnsupportedVersion, _) => {
            "this vgpud is older than vgpuctl: compare `vgpuctl version` with `vgpuctl --version`"
        }
        (ErrorKind::BadArguments, _) => "see `vgpuctl help` and `vgpuctl types`",
        (ErrorKind::NoScanout, _) => {
            "the guest has not set a display mode (or disabled it); try again once it shows \
             something"
        }
        (ErrorKind::BadRequest | ErrorKind::Failed, _) => "see vgpud's log (journalctl -u vgpud)",
    };
    Some(hint.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(kind: ErrorKind) -> CtlError {
        CtlError::Daemon {
            kind,
            message: String::new(),
        }
    }

    #[test]
    fn every_error_kind_has_its_documented_exit_code() {
        let expected = [
            (ErrorKind::Failed, 1),
            (ErrorKind::BadRequest, 2),
            (ErrorKind::UnsupportedVersion, 2),
            (ErrorKind::UnknownCommand, 2),
            (ErrorKind::BadArguments, 2),
            (ErrorKind::NotFound, 3),
            (ErrorKind::Conflict, 4),
            (ErrorKind::InsufficientResources, 5),
            (ErrorKind::Busy, 6),
            (ErrorKind::NoScanout, 8),
        ];
        for (kind, code) in expected {
            assert_eq!(daemon(kind).code(), code, "{kind:?}");
        }
    }

    #[test]
    fn a_busy_remove_suggests_force() {
        let hint = daemon(ErrorKind::Busy).hint("remove").unwrap();
        assert!(hint.contains("--force"), "{hint}");
    }
}
