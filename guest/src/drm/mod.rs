//! Kernel mode setting through a DRM card node: the ioctl layer (`sys`), a
//! safe card handle (`card`), and display modes (`mode`).

mod card;
mod mode;
pub mod sys;

pub use card::{
    Card, Connector, CrtcState, DrmError, DumbBuffer, Encoder, Resources, parse_events,
};
pub use mode::{dmt_mode, mode_name};
pub use sys::ModeInfo;
