//! `seccomp-run UNIT_FILE -- PROGRAM ARGS...`: runs PROGRAM under the
//! system-call filter a systemd unit would give it, on a machine where
//! systemd is not PID 1 (CI, the QEMU end-to-end test).
//!
//! It reads the `[Service]` section's `SystemCallFilter=`,
//! `SystemCallErrorNumber=` and `SystemCallArchitectures=` lines with
//! systemd's rules (systemd.exec(5)):
//!
//! - the first non-empty `SystemCallFilter=` decides the mode: an allow
//!   list, to which `@default` is always added, or (`~` first) a deny list;
//!   a later line of the other polarity removes from the set, an empty one
//!   resets it;
//! - `@group`s are expanded with `systemd-analyze syscall-filter`, nested
//!   groups recursively, so the groups are the installed systemd's own;
//! - names this architecture does not have (`_llseek` on x86-64) are
//!   skipped, as systemd skips them;
//! - a call the filter refuses kills the process with SIGSYS, or fails
//!   with `SystemCallErrorNumber=`'s errno; a call of another architecture
//!   (`SystemCallArchitectures=native`) kills the process.
//!
//! The filter is installed with `PR_SET_NO_NEW_PRIVS` (as systemd does for
//! a root service with `NoNewPrivileges=yes`), then PROGRAM is executed and
//! inherits it. Not reproduced: the other seccomp-based settings
//! (`RestrictAddressFamilies=`, `MemoryDenyWriteExecute=`, ...), per-name
//! errnos (`name:EPERM`), and `SystemCallLog=`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use seccompiler::{BpfProgram, TargetArch};

#[derive(Debug, thiserror::Error)]
enum SeccompRunError {
    #[error("usage: seccomp-run UNIT_FILE -- PROGRAM [ARGS...]")]
    Usage,
    #[error("cannot read {}", .0.display())]
    ReadUnit(PathBuf, #[source] std::io::Error),
    #[error("{0} has no SystemCallFilter= line")]
    NoFilter(String),
    #[error("per-name errno `{0}` is not supported by seccomp-run")]
    PerNameErrno(String),
    #[error("SystemCallErrorNumber={0} is neither an errno name, a number, `kill` nor `log`")]
    ErrorNumber(String),
    #[error("SystemCallArchitectures={0}: seccomp-run only filters the native architecture ({1})")]
    Architecture(String, &'static str),
    #[error("cannot run systemd-analyze (install Debian's `systemd` package)")]
    Analyze(#[source] std::io::Error),
    #[error("systemd-analyze syscall-filter failed: {0}")]
    AnalyzeFailed(String),
    #[error("unknown system call group {0}")]
    UnknownGroup(String),
    #[error("seccompiler does not know this architecture")]
    Arch(#[source] seccompiler::BackendError),
    #[error("cannot compile the filter")]
    Compile(#[source] seccompiler::Error),
    #[error("cannot install the filter")]
    Install(#[source] seccompiler::Error),
    #[error("cannot execute {0}")]
    Exec(String, #[source] std::io::Error),
}

/// What the filter does to a call it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// SIGSYS for the whole process: systemd's default.
    Kill,
    /// The call fails with this errno.
    Errno(u32),
    /// The call is allowed and logged.
    Log,
}

/// The system-call settings of a unit, as written (groups not expanded).
#[derive(Debug, Default, PartialEq, Eq)]
struct UnitFilter {
    /// True for an allow list, false for a deny list; None until the first
    /// non-empty `SystemCallFilter=`.
    allow_list: Option<bool>,
    /// Names and `@group`s, resolved in order: `(true, x)` adds x to the
    /// set, `(false, x)` removes it.
    edits: Vec<(bool, String)>,
    refusal: Option<Refusal>,
}

impl UnitFilter {
    fn parse(unit: &str) -> Result<Self, SeccompRunError> {
        let mut filter = UnitFilter::default();
        let mut in_service = false;
        for line in logical_lines(unit) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if !in_service {
                continue;
            }
            let value = value.trim();
            match key.trim() {
                "SystemCallFilter" => filter.add_filter_line(value)?,
                "SystemCallErrorNumber" => filter.refusal = parse_refusal(value)?,
                "SystemCallArchitectures" => check_architectures(value)?,
                _ => {}
            }
        }
        Ok(filter)
    }

    /// systemd's `config_parse_syscall_filter`.
    fn add_filter_line(&mut self, value: &str) -> Result<(), SeccompRunError> {
        if value.is_empty() {
            *self = UnitFilter {
                refusal: self.refusal,
                ..UnitFilter::default()
            };
            return Ok(());
        }
        let (invert, words) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let allow_list = *self.allow_list.get_or_insert_with(|| {
            if !invert {
                self.edits.push((true, "@default".to_owned()));
            }
            !invert
        });
        for word in words.split_whitespace() {
            if word.contains(':') {
                return Err(SeccompRunError::PerNameErrno(word.to_owned()));
            }
            // An allow list grows with plain words and shrinks with `~`
            // ones; a deny list the other way round.
            self.edits.push((invert != allow_list, word.to_owned()));
        }
        Ok(())
    }
}

/// The unit's lines with `\`-continuations joined.
fn logical_lines(unit: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in unit.lines() {
        if let Some(head) = raw.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(raw);
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

fn parse_refusal(value: &str) -> Result<Option<Refusal>, SeccompRunError> {
    const ERRNOS: &[(&str, i32)] = &[
        ("EPERM", libc::EPERM),
        ("EACCES", libc::EACCES),
        ("ENOSYS", libc::ENOSYS),
        ("EINVAL", libc::EINVAL),
        ("EOPNOTSUPP", libc::EOPNOTSUPP),
        ("ENOTSUP", libc::ENOTSUP),
        ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ];
    if value.is_empty() {
        return Ok(None);
    }
    let refusal = match value {
        "kill" => Refusal::Kill,
        "log" => Refusal::Log,
        _ => {
            let errno = ERRNOS
                .iter()
                .find(|(name, _)| *name == value)
                .map(|&(_, errno)| errno)
                .or_else(|| value.parse().ok())
                .and_then(|errno: i32| u32::try_from(errno).ok())
                .ok_or_else(|| SeccompRunError::ErrorNumber(value.to_owned()))?;
            Refusal::Errno(errno)
        }
    };
    Ok(Some(refusal))
}

fn check_architectures(value: &str) -> Result<(), SeccompRunError> {
    let native = std::env::consts::ARCH;
    // systemd's spelling of the native architectures seccompiler knows.
    let systemd_name = match native {
        "x86_64" => "x86-64",
        other => other,
    };
    if value
        .split_whitespace()
        .all(|arch| arch == "native" || arch == systemd_name)
    {
        Ok(())
    } else {
        Err(SeccompRunError::Architecture(value.to_owned(), native))
    }
}

/// Every group `systemd-analyze syscall-filter` lists, with its members as
/// printed (names and nested `@group`s).
fn systemd_groups() -> Result<BTreeMap<String, Vec<String>>, SeccompRunError> {
    let output = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .map_err(SeccompRunError::Analyze)?;
    if !output.status.success() {
        return Err(SeccompRunError::AnalyzeFailed(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    Ok(parse_groups(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses `systemd-analyze syscall-filter`: a group is a line `@name` at
/// the left margin followed by indented members; `#` lines are comments,
/// and the closing "unlisted system calls" block belongs to no group.
fn parse_groups(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            current = line.trim().starts_with('@').then(|| line.trim().to_owned());
            if let Some(name) = &current {
                groups.entry(name.clone()).or_default();
            }
            continue;
        }
        let member = line.trim();
        if member.starts_with('#') {
            continue;
        }
        if let Some(name) = &current {
            groups
                .entry(name.clone())
                .or_default()
                .push(member.to_owned());
        }
    }
    groups
}

/// The names of `item` (a name, or a group expanded recursively).
fn expand(
    item: &str,
    groups: &BTreeMap<String, Vec<String>>,
    out: &mut BTreeSet<String>,
    seen: &mut BTreeSet<String>,
) -> Result<(), SeccompRunError> {
    if !item.starts_with('@') {
        out.insert(item.to_owned());
        return Ok(());
    }
    let members = groups
        .get(item)
        .ok_or_else(|| SeccompRunError::UnknownGroup(item.to_owned()))?;
    if !seen.insert(item.to_owned()) {
        return Ok(());
    }
    for member in members {
        expand(member, groups, out, seen)?;
    }
    Ok(())
}

/// The set of names the unit's edits leave.
fn resolve(
    filter: &UnitFilter,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeSet<String>, SeccompRunError> {
    let mut set = BTreeSet::new();
    for (add, item) in &filter.edits {
        let mut names = BTreeSet::new();
        expand(item, groups, &mut names, &mut BTreeSet::new())?;
        if *add {
            set.extend(names);
        } else {
            set.retain(|name| !names.contains(name));
        }
    }
    Ok(set)
}

fn action_json(refusal: Refusal) -> serde_json::Value {
    match refusal {
        Refusal::Kill => serde_json::json!("kill_process"),
        Refusal::Errno(errno) => serde_json::json!({ "errno": errno }),
        Refusal::Log => serde_json::json!("log"),
    }
}

/// Whether seccompiler knows `name` on `arch`: systemd's groups list the
/// calls of every architecture, and a filter holds only this one's.
fn known(name: &str, arch: TargetArch) -> bool {
    let probe = serde_json::json!({
        "probe": {
            "mismatch_action": "allow",
            "match_action": "kill_process",
            "filter": [{ "syscall": name }],
        }
    });
    // With valid actions and one rule, the name is all that can fail.
    seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok()
}

/// Compiles the filter over the names this architecture has.
fn compile(
    allow_list: bool,
    names: &BTreeSet<String>,
    refusal: Refusal,
) -> Result<BpfProgram, SeccompRunError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(SeccompRunError::Arch)?;
    let (match_action, mismatch_action) = if allow_list {
        (serde_json::json!("allow"), action_json(refusal))
    } else {
        (action_json(refusal), serde_json::json!("allow"))
    };
    let rules: Vec<_> = names
        .iter()
        .filter(|name| known(name, arch))
        .map(|name| serde_json::json!({ "syscall": name }))
        .collect();
    let json = serde_json::json!({
        "main": {
            "mismatch_action": mismatch_action,
            "match_action": match_action,
            "filter": rules,
        }
    });
    seccompiler::compile_from_json(json.to_string().as_bytes(), arch)
        .map_err(SeccompRunError::Compile)?
        .remove("main")
        .ok_or(SeccompRunError::Compile(seccompiler::Error::EmptyFilter))
}

fn run(args: &[String]) -> Result<std::convert::Infallible, SeccompRunError> {
    let [unit_path, dashes, program, rest @ ..] = args else {
        return Err(SeccompRunError::Usage);
    };
    if dashes != "--" {
        return Err(SeccompRunError::Usage);
    }
    let unit = std::fs::read_to_string(unit_path)
        .map_err(|e| SeccompRunError::ReadUnit(Path::new(unit_path).to_path_buf(), e))?;
    let filter = UnitFilter::parse(&unit)?;
    let allow_list = filter
        .allow_list
        .ok_or_else(|| SeccompRunError::NoFilter(unit_path.clone()))?;
    let names = resolve(&filter, &systemd_groups()?)?;
    let program_bpf = compile(allow_list, &names, filter.refusal.unwrap_or(Refusal::Kill))?;
    seccompiler::apply_filter_all_threads(&program_bpf).map_err(SeccompRunError::Install)?;
    let error = Command::new(program).args(rest).exec();
    Err(SeccompRunError::Exec(program.clone(), error))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(never) => match never {},
        Err(e) => {
            eprint!("seccomp-run: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprint!(": {cause}");
                source = cause.source();
            }
            eprintln!();
            // 127 as a shell says "could not run the command".
            ExitCode::from(127)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &str = "@default\n    # always\n    exit\n    brk\n\n\
        @outer\n    # nests\n    @inner\n    read\n\n\
        @inner\n    write\n\n\
        # Unlisted system calls (supported by the local kernel, but not included in any of the groups listed above):\n    \
        kexec_load\n";

    #[test]
    fn groups_nest_and_skip_comments_and_the_unlisted_block() {
        let groups = parse_groups(GROUPS);
        assert_eq!(groups["@outer"], ["@inner", "read"]);
        assert_eq!(groups.len(), 3);
        let mut names = BTreeSet::new();
        expand("@outer", &groups, &mut names, &mut BTreeSet::new()).unwrap();
        assert_eq!(names, BTreeSet::from(["read".into(), "write".into()]));
    }

    #[test]
    fn an_allow_list_gets_default_and_loses_tilde_lines() {
        let unit = "[Unit]\nSystemCallFilter=~ignored\n[Service]\n\
            SystemCallFilter=@outer\nSystemCallFilter=pread64\n\
            SystemCallFilter=~@inner\n";
        let filter = UnitFilter::parse(unit).unwrap();
        assert_eq!(filter.allow_list, Some(true));
        let names = resolve(&filter, &parse_groups(GROUPS)).unwrap();
        let expected = ["brk", "exit", "pread64", "read"];
        assert_eq!(names, expected.iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn a_deny_list_has_no_default() {
        let unit = "[Service]\nSystemCallFilter=~@inner read\nSystemCallFilter=read\n";
        let filter = UnitFilter::parse(unit).unwrap();
        assert_eq!(filter.allow_list, Some(false));
        let names = resolve(&filter, &parse_groups(GROUPS)).unwrap();
        assert_eq!(names, BTreeSet::from(["write".to_string()]));
    }

    #[test]
    fn an_empty_assignment_resets() {
        let unit = "[Service]\nSystemCallFilter=read\nSystemCallFilter=\n";
        assert_eq!(UnitFilter::parse(unit).unwrap().allow_list, None);
    }

    #[test]
    fn error_numbers_and_architectures() {
        assert_eq!(
            parse_refusal("EPERM").unwrap(),
            Some(Refusal::Errno(libc::EPERM as u32))
        );
        assert_eq!(parse_refusal("13").unwrap(), Some(Refusal::Errno(13)));
        assert_eq!(parse_refusal("kill").unwrap(), Some(Refusal::Kill));
        assert!(parse_refusal("EWHATEVER").is_err());
        assert!(check_architectures("native").is_ok());
        assert!(check_architectures("native x32").is_err());
    }

    #[test]
    fn unknown_names_are_dropped_when_compiling() {
        let names = ["read", "_llseek", "no_such_call"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(!compile(true, &names, Refusal::Kill).unwrap().is_empty());
    }
}
