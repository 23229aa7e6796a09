//! Test programs that run inside a Linux guest of a vGPU, under the
//! unmodified `bochs` DRM driver, and print one machine-readable line per
//! check on the console (see [`report`]).
//!
//! The programs (subcommands of the `vgpu-guest` binary):
//! - [`vram`]: VRAM reads zero after a reset, before any driver runs;
//! - [`probe`]: identity, BARs, capabilities, driver binding, DRM and fbdev
//!   nodes, first registers;
//! - [`draw`]: the test [`pattern`] through `/dev/fbN`, checked in VRAM;
//! - [`modeset`]: a second mode and page flips through DRM/KMS, checked in
//!   VRAM;
//! - [`dma`]: the device's DMA self-test to and from guest RAM;
//! - [`engines`]: page tables, two channels (RING_PUT and control-page
//!   doorbells), a picture drawn with FILL and BLIT2D, fences waited for
//!   on MSI-X (through [`vfio`]) or polled, checked in VRAM;
//! - [`hostile`] (`engines-hostile`): a privileged command in a nested
//!   batch and a page outside the VRAM slice stop only the hostile
//!   channel, while another vGPU keeps drawing;
//! - `boot-count`: which boot of the machine this is ([`cmos`]);
//! - [`watch`]: what the guest sees over time (the daemon going away);
//! - `checkpoint`: hold the display for the host ([`checkpoint`]);
//! - `compare-png` (on the host): check a screenshot against the pattern
//!   ([`compare`]) or the engines picture ([`engines_pattern`]).
//!
//! The pattern definition is pure and host-usable, so that a host test can
//! compute what the guest drew.

pub mod channel;
pub mod checkpoint;
pub mod cmos;
pub mod compare;
pub mod config_space;
pub mod dma;
pub mod draw;
pub mod drawing;
pub mod drm;
pub mod engines;
pub mod engines_pattern;
pub mod fbdev;
pub mod gpu;
pub mod hostile;
pub mod mapping;
pub mod modeset;
pub mod page_tables;
pub mod pattern;
pub mod pci;
pub mod probe;
pub mod registers;
pub mod report;
pub mod scanout;
pub mod vfio;
pub mod vram;
pub mod wait;
pub mod watch;

/// `error` and its sources, one after the other: "what: why: why".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
