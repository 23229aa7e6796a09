//! `vgpu-guest`: the guest test programs as subcommands.
//!
//! ```text
//! vgpu-guest vram [--bytes N]
//! vgpu-guest probe [--expect N] [--subsystems VVVV:DDDD,...]
//! vgpu-guest draw [--seed N]
//! vgpu-guest modeset [--mode WxH]
//! vgpu-guest dma
//! vgpu-guest engines [--seed N] [--vfio auto|none|ADDRESS]
//! vgpu-guest engines-hostile
//! vgpu-guest boot-count
//! vgpu-guest watch [--seconds N]                    (what the guest sees over time)
//! vgpu-guest checkpoint --device ADDRESS --name NAME   (holds the display for the host)
//! vgpu-guest compare-png FILE [--seed N --size WxH [--pattern engines]]   (on the host)
//! ```
//!
//! Exit status: 0 when every check passed, 1 when one failed, 2 on a usage
//! error.

use std::path::Path;
use std::process::ExitCode;

use vgpu_guest::cmos::Cmos;
use vgpu_guest::engines::VfioChoice;
use vgpu_guest::engines_pattern::SEED_ENGINES;
use vgpu_guest::pattern::SEED_FBDEV;
use vgpu_guest::probe::ProbeOptions;
use vgpu_guest::{dma, draw, engines, modeset, probe, vram};

const USAGE: &str = "usage: vgpu-guest vram [--bytes N]
       vgpu-guest probe [--expect N] [--subsystems VVVV:DDDD,...]
       vgpu-guest draw [--seed N]
       vgpu-guest modeset [--mode WxH]
       vgpu-guest dma
       vgpu-guest engines [--seed N] [--vfio auto|none|ADDRESS]
       vgpu-guest engines-hostile
       vgpu-guest boot-count
       vgpu-guest watch [--seconds N]
       vgpu-guest checkpoint --device ADDRESS --name NAME
       vgpu-guest compare-png FILE [--seed N --size WxH [--pattern engines]]";

/// Parses `--name value` pairs; every option takes a value.
fn options<'a>(args: &'a [String], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut pairs = Vec::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        if !known.contains(&name.as_str()) {
            return Err(format!("unknown option {name}"));
        }
        let value = it.next().ok_or(format!("{name} needs a value"))?;
        pairs.push((name.as_str(), value.as_str()));
    }
    Ok(pairs)
}

fn parse_number(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("not a number: {text}"))
}

fn parse_subsystems(text: &str) -> Result<Vec<(u32, u32)>, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (v, d) = pair
                .split_once(':')
                .ok_or(format!("not VVVV:DDDD: {pair}"))?;
            let hex = |s: &str| u32::from_str_radix(s, 16).map_err(|_| format!("not hex: {s}"));
            Ok((hex(v)?, hex(d)?))
        })
        .collect()
}

fn parse_mode(text: &str) -> Result<(u16, u16), String> {
    let (w, h) = text.split_once('x').ok_or(format!("not WxH: {text}"))?;
    let dim = |s: &str| s.parse::<u16>().map_err(|_| format!("not a size: {text}"));
    Ok((dim(w)?, dim(h)?))
}

fn run(args: &[String]) -> Result<usize, String> {
    let (command, rest) = args.split_first().ok_or("no command")?;
    match command.as_str() {
        "probe" => {
            let mut opts = ProbeOptions::default();
            for (name, value) in options(rest, &["--expect", "--subsystems"])? {
                match name {
                    "--expect" => opts.expect = Some(parse_number(value)? as usize),
                    _ => opts.subsystems = parse_subsystems(value)?,
                }
            }
            Ok(probe::run(&opts))
        }
        "vram" => {
            let mut bytes = vram::DEFAULT_CHECKED_BYTES;
            for (_, value) in options(rest, &["--bytes"])? {
                bytes = parse_number(value)?.into();
            }
            Ok(vram::run(bytes))
        }
        "draw" => {
            let mut seed = SEED_FBDEV;
            for (_, value) in options(rest, &["--seed"])? {
                seed = parse_number(value)?;
            }
            Ok(draw::run(seed))
        }
        "modeset" => {
            let mut mode = (800, 600);
            for (_, value) in options(rest, &["--mode"])? {
                mode = parse_mode(value)?;
            }
            Ok(modeset::run(mode.0, mode.1))
        }
        "dma" => {
            options(rest, &[])?;
            Ok(dma::run())
        }
        "engines" => {
            let (mut seed, mut vfio) = (SEED_ENGINES, VfioChoice::Auto);
            for (name, value) in options(rest, &["--seed", "--vfio"])? {
                match name {
                    "--seed" => seed = parse_number(value)?,
                    _ => {
                        vfio = match value {
                            "auto" => VfioChoice::Auto,
                            "none" => VfioChoice::Never,
                            address => VfioChoice::At(address.to_string()),
                        }
                    }
                }
            }
            Ok(engines::run(seed, &vfio))
        }
        "engines-hostile" => {
            options(rest, &[])?;
            Ok(vgpu_guest::hostile::run())
        }
        "boot-count" => {
            options(rest, &[])?;
            let boot = Cmos::open(Path::new("/dev/port"))
                .and_then(|cmos| cmos.count_boot())
                .map_err(|e| format!("boot-count: {e}"))?;
            println!("{boot}");
            Ok(0)
        }
        "watch" => {
            let mut seconds = 10;
            for (_, value) in options(rest, &["--seconds"])? {
                seconds = parse_number(value)?;
            }
            Ok(vgpu_guest::watch::run(
                std::time::Duration::from_secs(seconds.into()),
                std::time::Duration::from_millis(100),
            ))
        }
        "checkpoint" => {
            let (mut device, mut name) = (None, None);
            for (option, value) in options(rest, &["--device", "--name"])? {
                match option {
                    "--device" => device = Some(value),
                    _ => name = Some(value),
                }
            }
            let device = device.ok_or("checkpoint needs --device")?;
            let name = name.ok_or("checkpoint needs --name")?;
            let (width, height) = vgpu_guest::registers::current_mode(device)
                .map_err(|e| format!("checkpoint: {e}"))?;
            vgpu_guest::checkpoint::hold(device, name, None, width, height);
            Ok(0)
        }
        "compare-png" => {
            let (file, rest) = rest.split_first().ok_or("compare-png needs a FILE")?;
            let (mut seed, mut size, mut engines) = (None, None, false);
            for (option, value) in options(rest, &["--seed", "--size", "--pattern"])? {
                match option {
                    "--seed" => seed = Some(parse_number(value)?),
                    "--size" => size = Some(parse_mode(value)?),
                    _ => match value {
                        "engines" => engines = true,
                        "seed" => engines = false,
                        other => return Err(format!("unknown pattern {other}")),
                    },
                }
            }
            let picture =
                vgpu_guest::compare::Picture::load(Path::new(file)).map_err(|e| e.to_string())?;
            let Some(seed) = seed else {
                // No pattern to compare with: say what the picture is.
                println!(
                    "{}x{}, {} colours or more",
                    picture.width,
                    picture.height,
                    picture.colours(64)
                );
                return Ok(usize::from(picture.colours(2) < 2));
            };
            let (w, h) = size.map_or((picture.width, picture.height), |(w, h)| {
                (u32::from(w), u32::from(h))
            });
            let (name, result) = if engines {
                let pattern = vgpu_guest::engines_pattern::EnginesPattern::new(w, h, seed);
                (
                    "the engines picture of seed",
                    vgpu_guest::compare::matches(&picture, w, h, |x, y| pattern.pixel(x, y)),
                )
            } else {
                (
                    "seed",
                    vgpu_guest::compare::matches_pattern(&picture, seed, w, h),
                )
            };
            match result {
                Ok(n) => {
                    println!("{w}x{h}: all {n} pixels match {name} {seed}");
                    Ok(0)
                }
                Err(e) => {
                    println!("{w}x{h}: {e}");
                    Ok(1)
                }
            }
        }
        other => Err(format!("unknown command {other}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vgpu-guest: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
