//! Where the metrics endpoint may listen: on loopback unless the operator
//! says otherwise, since the metrics name every vGPU, profile and GPU.

use std::net::SocketAddr;

/// Why the metrics endpoint will not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "metrics_listen = \"{addr}\" is not a loopback address; set metrics_allow_remote = true to serve metrics to other hosts"
    )]
    NotLoopback { addr: SocketAddr },
}

/// Refuses a non-loopback `addr` (including the unspecified `0.0.0.0` and
/// `[::]`) unless `allow_remote`. An IPv4-mapped IPv6 loopback address
/// (`[::ffff:127.0.0.1]`) counts as loopback.
pub fn check_listen(addr: SocketAddr, allow_remote: bool) -> Result<(), MetricsError> {
    if allow_remote || addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(MetricsError::NotLoopback { addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn loopback_addresses_are_accepted() {
        for a in [
            "127.0.0.1:9400",
            "127.1.2.3:0",
            "[::1]:9400",
            "[::ffff:127.0.0.1]:9400",
        ] {
            check_listen(addr(a), false).unwrap_or_else(|e| panic!("{a}: {e}"));
        }
    }

    #[test]
    fn other_addresses_need_metrics_allow_remote() {
        for a in [
            "0.0.0.0:9400",
            "[::]:9400",
            "192.0.2.1:9400",
            "[2001:db8::1]:9400",
        ] {
            let error = check_listen(addr(a), false).expect_err(a);
            let message = error.to_string();
            assert!(message.contains("metrics_allow_remote = true"), "{message}");
            assert!(message.contains(a), "{message}");
            check_listen(addr(a), true).unwrap_or_else(|e| panic!("{a}: {e}"));
        }
    }
}
