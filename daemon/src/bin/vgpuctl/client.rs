//! One request on the daemon's control socket: connect, write the request
//! line, read the response line, sort the outcome into [`CtlError`]s.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vgpud::control::protocol::{CONTROL_API_VERSION, Request, Response};

use crate::error::CtlError;

/// How long an answer may take: longer than anything the daemon does for
/// one request (a screenshot waits up to 10 s for another; `stop --force`
/// gives the client 500 ms).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's control socket.
#[derive(Debug, Clone)]
pub struct Control {
    socket: PathBuf,
}

impl Control {
    pub fn new(runtime_dir: &Path) -> Self {
        Self {
            socket: runtime_dir.join(vgpud::daemon::CONTROL_SOCKET),
        }
    }

    /// Sends `command` with `args` (none when they serialize to null) and
    /// returns the raw result.
    pub fn call_raw(
        &self,
        command: &str,
        args: impl Serialize,
    ) -> Result<serde_json::Value, CtlError> {
        let malformed = |source| CtlError::Malformed {
            command: command.into(),
            source,
        };
        let request = Request {
            version: CONTROL_API_VERSION,
            command: command.into(),
            args: serde_json::to_value(args).map_err(malformed)?,
        };
        let mut line = serde_json::to_vec(&request).map_err(malformed)?;
        line.push(b'\n');
        let reply = self.exchange(&line)?;
        decode(command, &reply)
    }

    /// Sends `command` and decodes its result as `T`, returning the raw
    /// result too (for `--json`, which prints what the daemon said,
    /// fields this client does not know included).
    pub fn call<T: DeserializeOwned>(
        &self,
        command: &str,
        args: impl Serialize,
    ) -> Result<(T, serde_json::Value), CtlError> {
        let raw = self.call_raw(command, args)?;
        let typed = T::deserialize(&raw).map_err(|source| CtlError::Malformed {
            command: command.into(),
            source,
        })?;
        Ok((typed, raw))
    }

    fn exchange(&self, line: &[u8]) -> Result<String, CtlError> {
        let unreachable = |source| CtlError::Unreachable {
            path: self.socket.clone(),
            source,
        };
        let no_answer = |source| CtlError::NoAnswer {
            path: self.socket.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(no_answer)?;
        stream
            .set_write_timeout(Some(ANSWER_TIMEOUT))
            .map_err(no_answer)?;
        (&stream).write_all(line).map_err(no_answer)?;
        let mut reply = String::new();
        // A daemon's answer is bounded (a screenshot's PNG is the largest);
        // the bound only guards against a peer that never ends its line.
        let limit = (MAX_ANSWER_LEN + 1) as u64;
        let read = BufReader::new(std::io::Read::take(&stream, limit))
            .read_line(&mut reply)
            .map_err(no_answer)?;
        if read == 0 {
            return Err(CtlError::Closed {
                path: self.socket.clone(),
            });
        }
        if read > MAX_ANSWER_LEN || !reply.ends_with('\n') {
            return Err(CtlError::Incomplete {
                command: "the request".into(),
                what: "an unterminated or overlong line".into(),
            });
        }
        Ok(reply)
    }
}

/// Longest answer line read: a screenshot of 4095 × 4095 pixels is at
/// most about 50 MiB of PNG, 67 MiB in base64.
const MAX_ANSWER_LEN: usize = 128 << 20;

/// The result of `command` in the response line `reply`, or why there is
/// none. The daemon's answer is not trusted: anything else is an error.
pub fn decode(command: &str, reply: &str) -> Result<serde_json::Value, CtlError> {
    let response: Response = serde_json::from_str(reply).map_err(|source| CtlError::Malformed {
        command: command.into(),
        source,
    })?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => Err(CtlError::Daemon {
            kind: error.kind,
            message: error.message,
        }),
        _ => Err(CtlError::Incomplete {
            command: command.into(),
            what: "neither a result nor an error".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any line a peer on the socket sends is a result or an error,
        /// never a panic.
        #[test]
        fn any_answer_line_decodes_or_is_refused(line in ".{0,256}") {
            let _ = decode("list", &line);
        }

        #[test]
        fn any_json_answer_decodes_or_is_refused(
            ok in proptest::bool::ANY,
            kind in "[a-z_]{0,24}",
            result in proptest::option::of(proptest::num::i64::ANY),
        ) {
            let result = result.map_or("null".into(), |r| r.to_string());
            let line = format!(
                r#"{{"version":1,"ok":{ok},"result":{result},"error":{{"kind":"{kind}","message":"m"}}}}"#
            );
            let _ = decode("list", &line);
        }
    }

    #[test]
    fn an_error_answer_keeps_its_kind_and_message() {
        let line = r#"{"version":1,"ok":false,"error":{"kind":"busy","message":"attached"}}"#;
        match decode("stop", line) {
            Err(CtlError::Daemon { kind, message }) => {
                assert_eq!(kind, vgpud::control::protocol::ErrorKind::Busy);
                assert_eq!(message, "attached");
            }
            other => panic!("{other:?}"),
        }
    }
}
