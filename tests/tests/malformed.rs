//! Malformed and hostile messages: each gets an error reply with a real
//! errno (or, where the stream cannot go on, a clean close), and another
//! vGPU of the same daemon keeps serving throughout.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use anyhow::Context;
use vgpud_tests::host::eventfds;
use vgpud_tests::regs::config::{VENDOR, VENDOR_ID};
use vgpud_tests::regs::{bar2, region};
use vgpud_tests::wire::{Header, IrqSet, RegionAccess, command, flags, irq_index, irq_set_flags};
use vgpud_tests::{ClientError, RawClient, TestDaemon, VGPU_A, VGPU_B};
use zerocopy::IntoBytes;

const EINVAL: u32 = libc::EINVAL as u32;

/// How the server dealt with a bad message.
#[derive(Debug, PartialEq)]
enum Outcome {
    ErrorReply(u32),
    Closed,
}

/// A daemon, a client on vGPU B that must keep working, and the errant
/// client on vGPU A.
struct Scene {
    daemon: TestDaemon,
    bystander: RawClient,
}

/// Runs `test` in a new scene; a failure carries the daemon's log.
fn in_scene(test: impl FnOnce(&mut Scene) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let bystander = daemon.connect(VGPU_B)?;
    let mut scene = Scene { daemon, bystander };
    test(&mut scene)
        .map_err(|error| error.context(format!("daemon stderr:\n{}", scene.daemon.stderr())))
}

impl Scene {
    fn errant(&self) -> anyhow::Result<RawClient> {
        let mut client = self.daemon.connect(VGPU_A)?;
        client.set_timeout(Duration::from_secs(3))?;
        Ok(client)
    }

    /// B still answers, and A does too: on the same connection if it is
    /// open, else (or, with `may_close`, if it was closed after an error
    /// reply) on a new one.
    fn assert_still_serving(
        &mut self,
        errant: Option<RawClient>,
        may_close: bool,
    ) -> anyhow::Result<()> {
        let vendor = u64::from(VENDOR);
        let b = self.bystander.config_read(VENDOR_ID, 2).context("vGPU B")?;
        assert_eq!(b, vendor, "vGPU B");
        let mut errant = match errant {
            Some(client) => client,
            None => self.reconnect_errant().context("reconnecting to vGPU A")?,
        };
        let a = match errant.config_read(VENDOR_ID, 2) {
            Err(error) if may_close && error.is_closed() => {
                let mut fresh = self.reconnect_errant().context("reconnecting to vGPU A")?;
                fresh.config_read(VENDOR_ID, 2).context("vGPU A")?
            }
            other => other.context("vGPU A")?,
        };
        assert_eq!(a, vendor, "vGPU A");
        Ok(())
    }

    fn reconnect_errant(&self) -> anyhow::Result<RawClient> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.errant() {
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }
}

fn message(id: u16, cmd: u16, msg_flags: u32, size: u32, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        id,
        command: cmd,
        size,
        flags: msg_flags,
        error: 0,
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// A well-framed command: `size` is the true length.
fn command_message(id: u16, cmd: u16, payload: &[u8]) -> Vec<u8> {
    message(id, cmd, 0, (16 + payload.len()) as u32, payload)
}

fn outcome(client: &mut RawClient, id: u16) -> anyhow::Result<Outcome> {
    match client.recv_raw() {
        Ok(reply) => {
            let h = reply.header;
            anyhow::ensure!(
                h.kind() == flags::TYPE_REPLY && h.id == id && h.flags & flags::ERROR != 0,
                "expected an error reply to id {id}, got {h:?}"
            );
            Ok(Outcome::ErrorReply(h.error))
        }
        Err(error) if error.is_closed() => Ok(Outcome::Closed),
        Err(error) => Err(error.into()),
    }
}

/// Error reply with a nonzero errno, or a close: returns the client if the
/// connection is still open.
fn refused_or_closed(mut client: RawClient, id: u16) -> anyhow::Result<Option<RawClient>> {
    match outcome(&mut client, id)? {
        Outcome::ErrorReply(errno) => {
            assert_ne!(errno, 0, "error reply without an errno");
            Ok(Some(client))
        }
        Outcome::Closed => Ok(None),
    }
}

fn refused_with(result: Result<impl std::fmt::Debug, ClientError>, errno: u32) {
    match result {
        Err(ClientError::Refused { errno: got }) => assert_eq!(got, errno),
        other => panic!("expected an error reply with errno {errno}, got {other:?}"),
    }
}

#[test]
fn header_smaller_than_a_header_is_refused_or_closed() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        let id = a.next_id();
        a.send_raw(&message(id, command::REGION_READ, 0, 8, &[]), &[])?;
        let a = refused_or_closed(a, id)?;
        scene.assert_still_serving(a, true)
    })
}

#[test]
fn truncated_payload_gets_einval() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        // REGION_READ needs 16 payload bytes; send 8.
        let id = a.next_id();
        a.send_raw(&command_message(id, command::REGION_READ, &[0; 8]), &[])?;
        assert_eq!(outcome(&mut a, id)?, Outcome::ErrorReply(EINVAL));
        scene.assert_still_serving(Some(a), false)
    })
}

#[test]
fn unknown_command_gets_an_error_reply() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        let id = a.next_id();
        a.send_raw(&command_message(id, 0x77, &[]), &[])?;
        match outcome(&mut a, id)? {
            Outcome::ErrorReply(errno) => assert_ne!(errno, 0),
            Outcome::Closed => panic!("closed on an unknown command"),
        }
        scene.assert_still_serving(Some(a), false)
    })
}

#[test]
fn accesses_outside_a_region_get_einval() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        refused_with(a.region_read(region::CONFIG, 4094, 4), EINVAL);
        refused_with(a.region_read(region::BAR2, 0x8000, 4), EINVAL);
        refused_with(a.region_read(region::BAR0, (16 << 20) - 2, 4), EINVAL);
        refused_with(a.region_read(region::BAR1, 0, 4), EINVAL);
        refused_with(a.region_read(region::COUNT, 0, 4), EINVAL);
        refused_with(a.region_read(region::CONFIG, u64::MAX - 1, 4), EINVAL);
        refused_with(a.region_write(region::BAR2, 0x3ffe, &[0; 4]), EINVAL);
        refused_with(a.region_info(20).map(|r| r.info), EINVAL);
        refused_with(a.irq_info(9), EINVAL);
        scene.assert_still_serving(Some(a), false)
    })
}

#[test]
fn bar2_accesses_of_bad_size_or_alignment_get_einval() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        refused_with(a.region_read(region::BAR2, bar2::MAGIC, 3), EINVAL);
        refused_with(a.region_read(region::BAR2, bar2::MAGIC, 16), EINVAL);
        refused_with(a.region_read(region::BAR2, bar2::MAGIC + 2, 4), EINVAL);
        refused_with(a.region_read(region::BAR2, bar2::MAGIC, 0), EINVAL);
        refused_with(
            a.region_write(region::BAR2, bar2::IRQ_MASK, &[7, 0, 0]),
            EINVAL,
        );
        assert_eq!(
            a.bar2_read32(bar2::IRQ_MASK)?,
            0,
            "refused write changed state"
        );
        scene.assert_still_serving(Some(a), false)
    })
}

#[test]
fn message_with_the_reply_bit_set_is_refused() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        let id = a.next_id();
        let access = RegionAccess {
            offset: 0,
            region: region::CONFIG,
            count: 4,
        };
        let bytes = message(
            id,
            command::REGION_READ,
            flags::TYPE_REPLY,
            32,
            access.as_bytes(),
        );
        a.send_raw(&bytes, &[])?;
        let a = refused_or_closed(a, id)?;
        scene.assert_still_serving(a, false)
    })
}

#[test]
fn garbage_version_json_is_refused() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = RawClient::connect_without_handshake(&scene.daemon.socket(VGPU_A))?;
        a.set_timeout(Duration::from_secs(3))?;
        let mut payload = vec![0, 0, 0, 0];
        payload.extend_from_slice(b"{\"capabilities\": [}}garbage\0");
        a.send_raw(&command_message(0, command::VERSION, &payload), &[])?;
        let a = refused_or_closed(a, 0)?;
        // An open connection has not negotiated: finish the handshake properly.
        let a = match a {
            Some(mut client) => {
                client.handshake()?;
                Some(client)
            }
            None => None,
        };
        scene.assert_still_serving(a, false)
    })
}

#[test]
fn request_before_version_gets_einval() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = RawClient::connect_without_handshake(&scene.daemon.socket(VGPU_A))?;
        a.set_timeout(Duration::from_secs(3))?;
        refused_with(a.region_read(region::CONFIG, 0, 4), EINVAL);
        a.handshake()?;
        scene.assert_still_serving(Some(a), false)
    })
}

#[test]
fn more_fds_than_max_msg_fds_are_refused() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        let fds = eventfds(20)?;
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let set = IrqSet {
            argsz: size_of::<IrqSet>() as u32,
            flags: irq_set_flags::DATA_EVENTFD | irq_set_flags::ACTION_TRIGGER,
            index: irq_index::MSIX,
            start: 0,
            count: 5,
        };
        let id = a.next_id();
        a.send_raw(
            &command_message(id, command::DEVICE_SET_IRQS, set.as_bytes()),
            &borrowed,
        )?;
        let a = refused_or_closed(a, id)?;
        scene.assert_still_serving(a, false)
    })
}

#[test]
fn oversized_message_is_refused_and_skipped() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        let access = RegionAccess {
            offset: 0,
            region: region::BAR0,
            count: 64 << 20,
        };
        let id = a.next_id();
        // Claims 64 MiB of data; only the fixed part follows at first.
        let size = 32 + (64 << 20);
        let bytes = message(id, command::REGION_WRITE, 0, size, access.as_bytes());
        a.send_raw(&bytes, &[])?;
        let Some(mut a) = refused_or_closed(a, id)? else {
            return scene.assert_still_serving(None, true);
        };
        // The server skips the claimed bytes: once they are sent the
        // stream is framed again and the connection goes on.
        a.set_timeout(Duration::from_secs(10))?;
        a.send_raw(&vec![0; size as usize - bytes.len()], &[])?;
        scene.assert_still_serving(Some(a), false)
    })
}

#[test]
fn read_over_max_data_xfer_size_is_refused() -> anyhow::Result<()> {
    in_scene(|scene| {
        let mut a = scene.errant()?;
        let result = a.region_read(region::BAR0, 0, (1 << 20) + 4096);
        let errno = result.expect_err("2 MiB read accepted").errno();
        assert!(matches!(errno, Some(e) if e != 0), "{errno:?}");
        scene.assert_still_serving(Some(a), false)
    })
}
