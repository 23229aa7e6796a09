//! The machine-readable result lines the programs print on the console.
//!
//! ```text
//! VGPU-TEST <program>.<check> PASS <detail>
//! VGPU-TEST <program>.<check> FAIL <detail>
//! VGPU-INFO <program> <detail>
//! ```
//!
//! One line per check and device; a per-device detail starts with the PCI
//! address. Nothing else the programs print starts with `VGPU-`, so a host
//! can grep the serial console for these lines alone. Lines go to stdout in
//! one `write` each, so that they are not interleaved with each other.

use std::fmt::Display;
use std::io::Write;

/// Whether a check held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It held.
    Pass,
    /// It did not.
    Fail,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        }
    }
}

/// Formats one result line (without the newline).
pub fn result_line(program: &str, check: &str, verdict: Verdict, detail: &str) -> String {
    let mut line = format!("VGPU-TEST {program}.{check} {}", verdict.word());
    if !detail.is_empty() {
        line.push(' ');
        // A detail is free text, but one line: a newline in it would make a
        // host parser see a line that is not a result.
        line.extend(detail.chars().map(|c| if c.is_control() { ' ' } else { c }));
    }
    line
}

/// Prints the result lines of one program and counts its failures.
#[derive(Debug)]
pub struct Reporter {
    program: &'static str,
    failures: usize,
}

impl Reporter {
    /// A reporter for `program` (`probe`, `draw`, …).
    pub fn new(program: &'static str) -> Self {
        Reporter {
            program,
            failures: 0,
        }
    }

    /// Reports that `check` held.
    pub fn pass(&mut self, check: &str, detail: impl Display) {
        self.emit(check, Verdict::Pass, &detail.to_string());
    }

    /// Reports that `check` did not hold.
    pub fn fail(&mut self, check: &str, detail: impl Display) {
        self.failures += 1;
        self.emit(check, Verdict::Fail, &detail.to_string());
    }

    /// Reports `check` from a result: `Ok(detail)` passes, `Err(why)` fails.
    /// Returns whether it passed.
    pub fn record<E: Display>(&mut self, check: &str, result: Result<String, E>) -> bool {
        match result {
            Ok(detail) => {
                self.pass(check, detail);
                true
            }
            Err(why) => {
                self.fail(check, why);
                false
            }
        }
    }

    /// Prints an informational line.
    pub fn info(&self, detail: impl Display) {
        print_line(&format!("VGPU-INFO {} {detail}", self.program));
    }

    /// How many checks failed so far.
    pub fn failures(&self) -> usize {
        self.failures
    }

    fn emit(&self, check: &str, verdict: Verdict, detail: &str) {
        print_line(&result_line(self.program, check, verdict, detail));
    }
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    // The console is the only channel to the host: if it is gone there is
    // nobody to tell, so a failed write is ignored.
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_names_program_check_and_verdict() {
        assert_eq!(
            result_line("probe", "identity", Verdict::Pass, "0000:00:02.0 ok"),
            "VGPU-TEST probe.identity PASS 0000:00:02.0 ok"
        );
        assert_eq!(
            result_line("draw", "fbdev", Verdict::Fail, ""),
            "VGPU-TEST draw.fbdev FAIL"
        );
    }

    #[test]
    fn result_line_keeps_a_multi_line_detail_on_one_line() {
        let line = result_line("probe", "caps", Verdict::Fail, "a\nb\rc");
        assert_eq!(line, "VGPU-TEST probe.caps FAIL a b c");
    }

    #[test]
    fn reporter_counts_failures_only() {
        let mut r = Reporter::new("test");
        r.pass("a", "");
        r.fail("b", "");
        assert!(!r.record::<String>("c", Err("no".into())));
        assert!(r.record::<String>("d", Ok("yes".into())));
        assert_eq!(r.failures(), 2);
    }
}
