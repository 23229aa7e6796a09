//! The daemon's control socket, spoken to directly: one JSON request line,
//! one response line, under a timeout (a daemon that does not answer fails
//! the test instead of hanging it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// How long a control request may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `command` (with `args`, if not null) and returns the response.
pub fn control_request(
    socket: &Path,
    command: &str,
    args: serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let stream = UnixStream::connect(socket).context("connect to the control socket")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = serde_json::json!({"version": 1, "command": command});
    if !args.is_null() {
        request["args"] = args;
    }
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut response = String::new();
    BufReader::new(&stream)
        .read_line(&mut response)
        .with_context(|| format!("no answer to {command} within {timeout:?}"))?;
    Ok(serde_json::from_str(&response)?)
}

/// `list`'s entry for the vGPU `uuid`.
pub fn list_entry(socket: &Path, uuid: uuid::Uuid) -> anyhow::Result<serde_json::Value> {
    let response = control_request(socket, "list", serde_json::Value::Null, CONTROL_TIMEOUT)?;
    anyhow::ensure!(response["ok"] == true, "list failed: {response}");
    response["result"]["vgpus"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|e| e["uuid"] == uuid.to_string().as_str())
                .cloned()
        })
        .with_context(|| format!("no vGPU {uuid} in {response}"))
}
