//! `vgpuctl top`: `stats` every interval, shown as what each vGPU did in
//! the interval (rates, and the engine time share Δrun / Δtime).
//!
//! Three forms: a table redrawn in place on a terminal (cursor hidden
//! while it runs, shown again on exit, Ctrl-C or SIGTERM); one line per
//! vGPU per refresh, with a timestamp, when standard output is not a
//! terminal; one JSON object per refresh per line with `--json`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use vgpud::control::protocol::{StatsArgs, StatsResult, VgpuStatsEntry};

use crate::client::Control;
use crate::error::CtlError;
use crate::table::{Align, Table};
use crate::units;

/// What one vGPU did in one interval, per second of the daemon's clock
/// (`time_ns` of two `stats` results).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub register_accesses_per_s: f64,
    pub interrupts_per_s: f64,
    pub submissions_per_s: f64,
    pub commands_per_s: f64,
    /// Refused messages, page-table entries and submissions.
    pub refused_per_s: f64,
    pub mmu_faults_per_s: f64,
    /// Engine time its work ran, as a share of the interval.
    pub engine_run_percent: f64,
    /// Engine time it had work and waited, as a share of the interval.
    pub engine_wait_percent: f64,
}

impl Rates {
    /// The rates between two readings of one vGPU `dt_ns` apart; none when
    /// there is no interval or a counter went back (the vGPU was stopped
    /// and started again between them).
    pub fn between(before: &VgpuStatsEntry, now: &VgpuStatsEntry, dt_ns: u64) -> Option<Self> {
        if dt_ns == 0 {
            return None;
        }
        let delta = |f: fn(&VgpuStatsEntry) -> u64| f(now).checked_sub(f(before));
        let seconds = dt_ns as f64 / 1e9;
        let per_s = |d: u64| d as f64 / seconds;
        let share = |d: u64| d as f64 * 100.0 / dt_ns as f64;
        let reads = delta(|v| v.register_reads)?;
        let writes = delta(|v| v.register_writes)?;
        // Saturating: a daemon's counters are not trusted to stay small.
        let refused = delta(|v| v.refused_messages)?
            .saturating_add(delta(|v| v.refused_ptes)?)
            .saturating_add(delta(|v| v.refused_submissions)?);
        Some(Self {
            register_accesses_per_s: per_s(reads.saturating_add(writes)),
            interrupts_per_s: per_s(delta(|v| v.interrupts)?),
            submissions_per_s: per_s(delta(|v| v.submissions)?),
            commands_per_s: per_s(delta(|v| v.commands)?),
            refused_per_s: per_s(refused),
            mmu_faults_per_s: per_s(delta(|v| v.mmu_faults)?),
            engine_run_percent: share(delta(|v| v.engine_run_ns)?),
            engine_wait_percent: share(delta(|v| v.engine_wait_ns)?),
        })
    }
}

/// One refresh, as `top --json` prints it.
#[derive(Debug, Serialize)]
struct Refresh {
    /// When it was read, UTC.
    timestamp: String,
    /// The daemon's clock of the reading (`stats`' `time_ns`).
    time_ns: u64,
    /// Since the previous reading; null on the first refresh.
    interval_ns: Option<u64>,
    vgpus: Vec<VgpuRefresh>,
}

#[derive(Debug, Serialize)]
struct VgpuRefresh {
    #[serde(flatten)]
    stats: VgpuStatsEntry,
    /// Null on the first refresh, and for a vGPU new since the previous.
    rates: Option<Rates>,
}

impl Refresh {
    fn new(before: Option<&StatsResult>, now: StatsResult) -> Self {
        let interval_ns = before.and_then(|b| now.time_ns.checked_sub(b.time_ns));
        let vgpus = now
            .vgpus
            .into_iter()
            .map(|stats| {
                let rates = before
                    .and_then(|b| b.vgpus.iter().find(|v| v.uuid == stats.uuid))
                    .zip(interval_ns)
                    .and_then(|(old, dt)| Rates::between(old, &stats, dt));
                VgpuRefresh { stats, rates }
            })
            .collect();
        Self {
            timestamp: units::utc_now(),
            time_ns: now.time_ns,
            interval_ns,
            vgpus,
        }
    }
}

/// How the refreshes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Json,
    Terminal,
    Lines,
}

/// Runs `top` until `count` refreshes, Ctrl-C or SIGTERM.
pub fn run(
    control: &Control,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> Result<(), CtlError> {
    let form = if json {
        Form::Json
    } else if std::io::stdout().is_terminal() {
        Form::Terminal
    } else {
        Form::Lines
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Output)?;
    let outcome = runtime.block_on(refresh_until_done(control, interval, count, form));
    // A `stats` call still waiting for its answer must not hold up exit.
    runtime.shutdown_background();
    outcome
}

async fn refresh_until_done(
    control: &Control,
    interval: Duration,
    count: Option<u64>,
    form: Form,
) -> Result<(), CtlError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CtlError::Output)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(CtlError::Output)?;
    let mut screen = Screen::new(form)?;
    let mut before: Option<StatsResult> = None;
    let mut shown = 0u64;
    loop {
        let call = control.clone();
        let reading = tokio::task::spawn_blocking(move || {
            call.call::<StatsResult>("stats", StatsArgs::default())
        });
        let reading = tokio::select! {
            r = reading => r,
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        let (now, _) = reading.map_err(|e| CtlError::Output(std::io::Error::other(e)))??;
        let refresh = Refresh::new(before.as_ref(), now.clone());
        screen.show(&refresh, interval)?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        before = Some(now);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

/// Standard output in one of the forms; on a terminal it hides the
/// cursor while it lives.
#[derive(Debug)]
struct Screen {
    form: Form,
    header_printed: bool,
}

const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";
const CLEAR_HOME: &str = "\x1b[H\x1b[2J";

impl Screen {
    fn new(form: Form) -> Result<Self, CtlError> {
        if form == Form::Terminal {
            write_out(HIDE_CURSOR)?;
        }
        Ok(Self {
            form,
            header_printed: false,
        })
    }

    fn show(&mut self, refresh: &Refresh, interval: Duration) -> Result<(), CtlError> {
        match self.form {
            Form::Json => {
                let line = serde_json::to_string(refresh)
                    .map_err(|e| CtlError::Output(std::io::Error::other(e)))?;
                write_out(&format!("{line}\n"))
            }
            Form::Terminal => {
                let mut table = table(false);
                for v in &refresh.vgpus {
                    table.row(row(v));
                }
                let n = refresh.vgpus.len();
                write_out(&format!(
                    "{CLEAR_HOME}vgpuctl top: {n} running vGPU{}, every {} s, {} (Ctrl-C quits)\n\n{}",
                    if n == 1 { "" } else { "s" },
                    interval.as_secs_f64(),
                    refresh.timestamp,
                    table.render()
                ))
            }
            Form::Lines => {
                let mut table = table(true);
                for v in &refresh.vgpus {
                    let mut cells = vec![refresh.timestamp.clone()];
                    cells.extend(row(v));
                    table.row(cells);
                }
                let text = table.render();
                let skip = usize::from(self.header_printed);
                self.header_printed = true;
                let lines: String = text.split_inclusive('\n').skip(skip).collect();
                write_out(&lines)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.form == Form::Terminal {
            // Nothing more can be done about a terminal that is gone.
            let _ = write_out(SHOW_CURSOR);
        }
    }
}

fn write_out(text: &str) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CtlError::Output)
}

/// The columns; with a timestamp for lines, whose widths are fixed so that
/// the lines of successive refreshes align.
fn table(with_time: bool) -> Table {
    let mut columns = Vec::new();
    if with_time {
        columns.push(("TIME", Align::Left));
    }
    columns.extend([
        ("UUID", Align::Left),
        ("STATE", Align::Left),
        ("ENGINE", Align::Right),
        ("WAIT", Align::Right),
        ("REGS/S", Align::Right),
        ("IRQS/S", Align::Right),
        ("SUBMITS/S", Align::Right),
        ("CMDS/S", Align::Right),
        ("REFUSED/S", Align::Right),
        ("FAULTS/S", Align::Right),
        ("DMA", Align::Right),
        ("VRAM USED", Align::Right),
    ]);
    let table = Table::new(&columns);
    if with_time {
        table.min_widths(&[20, 36, 9, 6, 6, 6, 6, 9, 6, 9, 8, 10, 19])
    } else {
        table
    }
}

fn row(v: &VgpuRefresh) -> Vec<String> {
    let s = &v.stats;
    let rate = |f: fn(&Rates) -> f64| v.rates.as_ref().map_or("-".into(), |r| units::rate(f(r)));
    let share = |f: fn(&Rates) -> f64| {
        v.rates
            .as_ref()
            .map_or("-".into(), |r| units::percent(f(r)))
    };
    vec![
        s.uuid.clone(),
        s.state.name().into(),
        share(|r| r.engine_run_percent),
        share(|r| r.engine_wait_percent),
        rate(|r| r.register_accesses_per_s),
        rate(|r| r.interrupts_per_s),
        rate(|r| r.submissions_per_s),
        rate(|r| r.commands_per_s),
        rate(|r| r.refused_per_s),
        rate(|r| r.mmu_faults_per_s),
        units::bytes(s.dma_bytes),
        format!(
            "{} / {}",
            units::bytes(s.vram_touched),
            units::bytes(s.vram_size)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run_ns: u64, reads: u64, interrupts: u64) -> VgpuStatsEntry {
        VgpuStatsEntry {
            uuid: "u".into(),
            engine_run_ns: run_ns,
            register_reads: reads,
            interrupts,
            ..VgpuStatsEntry::default()
        }
    }

    #[test]
    fn rates_are_deltas_over_the_daemons_clock() {
        let rates =
            Rates::between(&entry(0, 100, 0), &entry(250_000_000, 300, 50), 500_000_000).unwrap();
        assert_eq!(rates.engine_run_percent, 50.0);
        assert_eq!(rates.register_accesses_per_s, 400.0);
        assert_eq!(rates.interrupts_per_s, 100.0);
    }

    proptest::proptest! {
        /// Whatever counters a daemon sends, rates and their rendering
        /// are numbers, not panics.
        #[test]
        fn any_counters_give_rates_or_none(
            a in proptest::array::uniform8(proptest::num::u64::ANY),
            b in proptest::array::uniform8(proptest::num::u64::ANY),
            dt in proptest::num::u64::ANY,
        ) {
            let reading = |c: [u64; 8]| VgpuStatsEntry {
                uuid: "u".into(),
                register_reads: c[0],
                register_writes: c[1],
                refused_messages: c[2],
                refused_ptes: c[3],
                refused_submissions: c[4],
                engine_run_ns: c[5],
                vram_touched: c[6],
                dma_bytes: c[7],
                ..VgpuStatsEntry::default()
            };
            let (before, now) = (reading(a), reading(b));
            let rates = Rates::between(&before, &now, dt);
            let refresh = VgpuRefresh { stats: now, rates };
            let mut shown = table(true);
            let mut cells = vec![String::new()];
            cells.extend(row(&refresh));
            shown.row(cells);
            proptest::prop_assert_eq!(shown.render().lines().count(), 2);
        }
    }

    #[test]
    fn a_counter_that_went_back_has_no_rate() {
        assert_eq!(
            Rates::between(&entry(0, 100, 0), &entry(0, 10, 0), 1_000_000_000),
            None
        );
        assert_eq!(Rates::between(&entry(0, 0, 0), &entry(0, 0, 0), 0), None);
    }
}
