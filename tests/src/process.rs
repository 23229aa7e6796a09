//! What a running daemon holds, read from /proc: the numbers the
//! documented bounds are checked against.

use anyhow::Context;

/// One reading of a process's resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// Resident set size, bytes.
    pub rss: u64,
    /// The anonymous part of it (the heap and stacks), bytes: what the
    /// daemon allocates, as opposed to VRAM and guest memory it touches.
    pub rss_anon: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Memory mappings (lines of /proc/PID/maps).
    pub mappings: usize,
    /// Threads.
    pub threads: usize,
}

/// Reads the resources of process `pid`.
pub fn resources(pid: u32) -> anyhow::Result<Resources> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let value = line[name.len()..]
            .split_whitespace()
            .next()
            .context("empty field")?;
        Ok(value.parse()?)
    };
    let rss = field("VmRSS:")? * 1024;
    let rss_anon = field("RssAnon:")? * 1024;
    let threads = usize::try_from(field("Threads:")?)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let mappings = std::fs::read_to_string(format!("/proc/{pid}/maps"))?
        .lines()
        .count();
    Ok(Resources {
        rss,
        rss_anon,
        fds,
        mappings,
        threads,
    })
}
