//! `vgpud`: serves vGPUs carved from physical GPUs over vfio-user sockets.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use vgpud::config::Config;
use vgpud::error_chain::ErrorChain;

/// Serve virtual GPUs to VMMs over vfio-user sockets.
///
/// vgpud carves each physical GPU of its configuration into vGPUs and
/// serves every vGPU on its own vfio-user socket, <runtime_dir>/<uuid>.sock,
/// which QEMU 10.1 and newer attach to with -device vfio-user-pci. It is
/// managed at run time with vgpuctl over <runtime_dir>/control.sock.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about,
    after_long_help = AFTER_HELP,
    after_help = "Examples, signals, files and exit codes: vgpud --help"
)]
struct Args {
    /// Configuration file (TOML; see docs/configuration.md).
    #[arg(long, short, default_value = "/etc/vgpud/vgpud.toml")]
    config: PathBuf,
    /// Serve sockets here instead of the file's runtime_dir.
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// Keep definitions (vgpuctl define) here instead of the file's
    /// state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    /// RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

const AFTER_HELP: &str = "\
Examples:
  vgpud --check --config /etc/vgpud/vgpud.toml
      Check a configuration (and that the system's limits give every vGPU
      its DMA allowance) without touching a running daemon.
  vgpud --config configs/example.toml --runtime-dir /tmp/vgpud --state-dir /tmp/vgpud-state
      Serve the example's vGPUs in /tmp/vgpud without root (systemd runs
      the installed unit, vgpud.service, with the file's directories).
  VGPUD_RUNTIME_DIR=/tmp/vgpud vgpuctl list
      See what it serves.

Signals:
  SIGTERM, SIGINT  stop: attached VMMs are asked to release their vGPUs
                   (REQ interrupt), given 500 ms, then disconnected; the
                   sockets are removed; exit 0 within about 2.5 s.
  SIGHUP           reload the configuration file (systemctl reload vgpud):
                   new [[vgpu]]s start, removed or changed ones stop or
                   restart unless a client is attached; an invalid file
                   changes nothing and is reported like at start.

Files:
  /etc/vgpud/vgpud.toml   the configuration (docs/configuration.md)
  <runtime_dir>           sockets, default /run/vgpud
  <state_dir>/vgpus/      definitions made with vgpuctl define, default
                          /var/lib/vgpud (docs/state-directory.md)

Environment:
  RUST_LOG        log filter, wins over --log-level
  NOTIFY_SOCKET   systemd's notification socket (Type=notify): READY=1
                  once every socket listens, STATUS=, RELOADING=1, STOPPING=1

Exit status:
  0  stopped by a signal, or --check found the configuration valid
  1  could not start (a socket path served by another process, the state
     directory, resources) or --check found the DMA budget short
  2  the configuration file is invalid (every problem is listed with its
     file:line:column)

Documentation: docs/operations.md, docs/configuration.md,
docs/control-api.md in the source tree.";

/// How often the service manager's STATUS= line is brought up to date
/// (when it changed): clients attach and leave without the daemon's
/// main loop hearing of it.
const STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps STATUS= up to date until the runtime stops.
async fn report_status(registry: Arc<vgpud::Registry>, mut last: String) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    loop {
        tick.tick().await;
        let (running, attached) = registry.counts();
        let status = vgpud::notify::status_line(running - attached, attached);
        if status != last {
            vgpud::notify::status(&status);
            last = status;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // The journal (and log files) want plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vgpud: invalid configuration:\n{}", ErrorChain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = args.runtime_dir.clone() {
        config.runtime_dir = dir;
    }
    if let Some(dir) = args.state_dir.clone() {
        config.state_dir = dir;
    }
    if args.check {
        if let Err(e) = vgpud::daemon::check_dma_budget(&config) {
            eprintln!("vgpud: {}", ErrorChain(&e));
            return ExitCode::FAILURE;
        }
        println!(
            "{}: ok ({} gpu, {} profiles, {} vGPUs)",
            args.config.display(),
            config.gpus.len(),
            config.profiles.len(),
            config.vgpus.len()
        );
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vgpud-rt")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vgpud: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config_path = args.config.clone();
    let runtime_dir_override = args.runtime_dir.clone();
    let state_dir_override = args.state_dir.clone();
    let load: vgpud::daemon::ConfigLoader = Box::new(move || {
        let mut config = Config::load(&config_path)?;
        if let Some(dir) = &runtime_dir_override {
            config.runtime_dir = dir.clone();
        }
        if let Some(dir) = &state_dir_override {
            config.state_dir = dir.clone();
        }
        Ok(config)
    });
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM"); break }
                    _ = int.recv() => { tracing::info!("SIGINT"); break }
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        vgpud::notify::reloading();
                        // A reload already queued covers this one too.
                        let _ = reload_tx.try_send(());
                    }
                }
            }
            vgpud::notify::stopping();
            signals.cancel();
        });
        vgpud::daemon::run_with_reload(
            config,
            shutdown.clone(),
            reload_rx,
            Some(load),
            |registry| {
                for (vgpu, _) in registry.vgpus() {
                    println!("{} {}", vgpu.uuid(), vgpu.socket_path().display());
                }
                let (running, attached) = registry.counts();
                let status = vgpud::notify::status_line(running - attached, attached);
                vgpud::notify::ready(&status);
                tracing::info!("{status}");
                tokio::spawn(report_status(Arc::clone(registry), status));
            },
            |registry| {
                let (running, attached) = registry.counts();
                vgpud::notify::ready(&vgpud::notify::status_line(running - attached, attached));
            },
        )
        .await
        .map_err(anyhow::Error::from)
    });
    // Blocking work the runtime still runs (a screenshot being encoded) is
    // not waited for past this: the daemon's exit must not depend on it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpud: {}", ErrorChain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
