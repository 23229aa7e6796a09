//! Configuration errors that point at the place to fix.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration. Holds every
    /// problem found, in file order, so an operator fixes them in one pass.
    #[error("{}", Diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems, empty for [`ConfigError::Read`].
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(d) => d,
        }
    }
}

/// One problem at one place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where: file, 1-based line and column.
    pub location: Location,
    /// What is wrong.
    pub problem: String,
    /// What would fix it, when there is something useful to say.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.problem)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Several diagnostics, one per line.
pub(crate) struct Diagnostics<'a>(pub &'a [Diagnostic]);

impl fmt::Display for Diagnostics<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A position in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// Turns byte spans of one source text into [`Location`]s.
pub(crate) struct SourceMap<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> SourceMap<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    pub fn locate(&self, span: Range<usize>) -> Location {
        let start = span.start.min(self.text.len());
        // A span may start inside a multi-byte character only if the parser
        // is wrong; fall back to the nearest boundary rather than panic.
        let mut start = start;
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            path: self.path.to_path_buf(),
            line,
            column,
        }
    }

    pub fn diagnostic(
        &self,
        span: Range<usize>,
        problem: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            location: self.locate(span),
            problem: problem.into(),
            help,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        let map = SourceMap::new(Path::new("f.toml"), text);
        let loc = map.locate(0..1);
        assert_eq!((loc.line, loc.column), (1, 1));
        let eq = text.find("= 2").unwrap();
        let loc = map.locate(eq..eq + 1);
        assert_eq!((loc.line, loc.column), (2, 4));
    }

    #[test]
    fn locate_clamps_spans_past_the_end() {
        let map = SourceMap::new(Path::new("f.toml"), "x\n");
        assert_eq!(map.locate(99..100).line, 2);
    }
}
