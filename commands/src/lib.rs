//! The simulated GPU's command set and the command validator.
//!
//! On the submission path (DESIGN.md, "The data paths", item 4) a guest
//! writes commands into a channel's ring in GPU virtual memory, advances
//! PUT and rings a doorbell. The daemon then validates: it copies the new
//! commands, and every batch buffer they start, into a private buffer
//! through the channel's MMU, decodes every command of that copy at every
//! nesting level, and refuses the submission whole at the first command a
//! guest must not run. Engines execute only what comes out, a
//! [`ValidatedStream`], which nothing but the validator can build: what
//! runs is what was checked, whatever the guest writes afterwards. The
//! command set and the rules are the contract in
//! docs/device-interface.md, "Commands".
//!
//! - `addr`: [`GpuVa`], an address inside the 48-bit GPU VA space;
//! - `opcode`: the header dword and the [`Opcode`]s, with the flag bits;
//! - `registers`: the engine register space ([`EngineRegister`]) and the
//!   guest whitelist ([`Gpr`], [`ReadableRegister`]);
//! - `command`: the guest commands an engine executes ([`Command`] and
//!   its field types);
//! - `decode`: one command from dwords ([`decode`], [`Decoded`]), the
//!   privileged forms recognised ([`Privileged`]), and why a command does
//!   not decode ([`DecodeError`], [`FieldError`]);
//! - `encode`: commands to dwords ([`encode`], [`StreamBuilder`]);
//! - `ring`: the ring registers at a doorbell ([`RingState`]) and their
//!   rules ([`RingError`]);
//! - `memory`: how the validator reads GPU memory ([`StreamMemory`],
//!   [`FetchFault`]);
//! - `validator`: the copy-and-decode pass ([`Validator`]) and its limits,
//!   with `screen`, its table-driven fast path for the common commands;
//! - `stream`: its output ([`ValidatedStream`], iterated as [`CommandAt`]s);
//! - `error`: the channel error codes ([`ChannelErrorCode`]) and the
//!   refusal ([`ValidateError`], [`Refusal`], [`CommandSite`]);
//! - [`testing`]: an in-memory [`StreamMemory`] and a reference validator;
//! - [`fuzzing`]: the harness of the `command_validator` fuzz target.
//!
//! The crate is transport-free and holds no `unsafe` code.

#![forbid(unsafe_code)]

mod addr;
mod command;
mod decode;
mod encode;
mod error;
pub mod fuzzing;
mod memory;
mod opcode;
mod registers;
mod ring;
mod screen;
mod stream;
pub mod testing;
mod validator;

pub use addr::{GPU_VA_BITS, GPU_VA_SPACE, GpuVa};
pub use command::{
    Blit2d, Command, CompareOp, FenceValue, MAX_SURFACE_DIMENSION, Scanout, TlbScope,
};
pub use decode::{DecodeError, Decoded, FieldError, Privileged, decode};
pub use encode::{StreamBuilder, encode};
pub use error::{ChannelErrorCode, CommandSite, FIRST_ENGINE_ERROR_CODE, Refusal, ValidateError};
pub use memory::{FetchFault, StreamMemory};
pub use opcode::{
    FLAG_BATCH_PRIVILEGED, FLAG_FENCE_INTERRUPT, FLAG_FENCE_VALUE64, FLAG_PHYSICAL,
    FLAG_SEMAPHORE_COMPARE_MASK, FLAG_SEMAPHORE_COMPARE_SHIFT, FLAG_TLB_ALL, HEADER_DWORDS_SHIFT,
    HEADER_FLAGS_MASK, HEADER_OPCODE_MASK, HEADER_RESERVED_MASK, MAX_COMMAND_DWORDS, Opcode,
    header,
};
pub use registers::{
    COMPLETED_FENCE_HI_OFFSET, COMPLETED_FENCE_LO_OFFSET, CONTEXT_ID_OFFSET, DISPLAY_HEAD_STRIDE,
    DISPLAY_HEAD0_OFFSET, DISPLAY_HEADS, DisplayRegister, EngineRegister, GPR_COUNT, GPR0_OFFSET,
    Gpr, MMU_CONTROL_OFFSET, PRIORITY_OFFSET, PT_ROOT_HI_OFFSET, PT_ROOT_LO_OFFSET,
    ReadableRegister, TIMESLICE_OFFSET, TIMESTAMP_HI_OFFSET, TIMESTAMP_LO_OFFSET,
    TLB_CONTROL_OFFSET, WATCHDOG_OFFSET,
};
pub use ring::{MAX_RING_BYTES, MIN_RING_BYTES, RingError, RingState};
pub use stream::{CommandAt, CommandCursor, Commands, ValidatedStream};
pub use validator::{MAX_BATCH_DEPTH, MAX_BATCH_STARTS, MAX_SUBMISSION_BYTES, Validator};
