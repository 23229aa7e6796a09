//! Linux errno numbers that the transport returns for refused requests.
//!
//! The device model has no libc dependency; these are the stable Linux
//! values, spelled out so that errors can say which one a VMM should see.

/// Invalid argument.
pub const EINVAL: i32 = 22;
/// Operation not supported (`EOPNOTSUPP` on Linux).
pub const ENOTSUP: i32 = 95;
