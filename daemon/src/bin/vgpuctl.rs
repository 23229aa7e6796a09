//! `vgpuctl`: the command-line client of a running vgpud's control API.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::{Parser, Subcommand};
use vgpud::control::protocol::{
    CONTROL_API_VERSION, ListResult, Request, Response, ScreenshotResult,
};

/// Manage the vGPUs of a running vgpud.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The daemon's runtime directory (its control socket is control.sock there).
    #[arg(long, env = "VGPUD_RUNTIME_DIR", default_value = "/run/vgpud")]
    runtime_dir: PathBuf,
    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List physical GPUs and vGPUs.
    List,
    /// Save what a vGPU's display shows now as a PNG file.
    Screenshot {
        /// The vGPU.
        uuid: String,
        /// Where to write the PNG.
        file: PathBuf,
    },
    /// Show the daemon's version and control API version.
    Version,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpuctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        Command::List => show(args, "list", print_list),
        Command::Version => show(args, "version", |v| {
            println!(
                "vgpud {} (control API {})",
                v["daemon"].as_str().unwrap_or("?"),
                v["api"]
            );
            Ok(())
        }),
        Command::Screenshot { uuid, file } => screenshot(args, uuid, file),
    }
}

/// Runs a command without arguments and prints its result as JSON or with
/// `render`.
fn show(
    args: &Args,
    command: &str,
    render: fn(&serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let result = call(args, command, serde_json::Value::Null)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        Ok(())
    } else {
        render(&result)
    }
}

fn call(
    args: &Args,
    command: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let path = args.runtime_dir.join(vgpud::daemon::CONTROL_SOCKET);
    let mut stream = UnixStream::connect(&path)
        .with_context(|| format!("cannot reach vgpud at {} (is it running?)", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = Request {
        version: CONTROL_API_VERSION,
        command: command.to_string(),
        args: params,
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .context("no answer from vgpud")?;
    let response: Response =
        serde_json::from_str(&reply).context("vgpud sent a malformed answer")?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => bail!("{} ({:?})", error.message, error.kind),
        _ => bail!("vgpud sent an answer with neither result nor error"),
    }
}

fn screenshot(args: &Args, uuid: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let result = call(args, "screenshot", serde_json::json!({ "uuid": uuid }))?;
    let shot: ScreenshotResult = serde_json::from_value(result.clone())?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(&shot.png_base64)
        .context("vgpud sent a malformed PNG")?;
    std::fs::write(file, &png).with_context(|| format!("cannot write {}", file.display()))?;
    if args.json {
        let mut summary = result;
        if let Some(map) = summary.as_object_mut() {
            map.remove("png_base64");
            map.insert("file".into(), file.display().to_string().into());
        }
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{}: {}x{} {} bpp, {} bytes",
            file.display(),
            shot.width,
            shot.height,
            shot.bpp,
            png.len()
        );
    }
    Ok(())
}

fn print_list(value: &serde_json::Value) -> anyhow::Result<()> {
    let list: ListResult = serde_json::from_value(value.clone())?;
    println!(
        "{:<6} {:<8} {:>10} {:>10}",
        "GPU", "BACKEND", "VRAM", "FREE"
    );
    for g in &list.gpus {
        println!(
            "{:<6} {:<8} {:>10} {:>10}",
            g.id,
            g.backend,
            mib(g.vram),
            mib(g.vram_free)
        );
    }
    println!();
    println!(
        "{:<36} {:<6} {:<12} {:>10} {:>4} {:<10} {:<8} SOCKET",
        "UUID", "GPU", "PROFILE", "FB", "CH", "MAX RES", "ATTACHED"
    );
    for v in &list.vgpus {
        println!(
            "{:<36} {:<6} {:<12} {:>10} {:>4} {:<10} {:<8} {}",
            v.uuid,
            v.gpu,
            v.profile,
            mib(v.framebuffer),
            v.channels,
            v.max_resolution,
            if v.attached { "yes" } else { "no" },
            v.socket
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}
