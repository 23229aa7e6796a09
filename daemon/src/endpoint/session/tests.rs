//! The session as a transport adapter, over a socket pair: the order
//! rules of the protocol, typed refusals with their errnos, and device
//! state that is the vGPU's, not the session's.

use std::os::unix::net::UnixStream;

use vgpu_emulation::RegionIndex;
use vgpu_emulation::bar2::layout::{CTRL_IRQ_MASK, CTRL_MAGIC};
use vgpu_protocol::wire::Command;
use vgpu_protocol::{Header, MessageReader, errno};

use crate::vgpu::{Vgpu, test_vgpu};

/// A client end and the thread serving the other end.
struct Pair {
    client: UnixStream,
    reader: MessageReader,
    next_id: u16,
}

impl Pair {
    fn serve(vgpu: &Vgpu, scope: impl FnOnce(&mut Pair)) {
        let (client, server) = UnixStream::pair().unwrap();
        let aperture = vgpu.vram().aperture();
        std::thread::scope(|s| {
            let serving = s.spawn(|| super::run(vgpu, aperture, server));
            let mut pair = Pair {
                client,
                reader: MessageReader::new(1 << 20),
                next_id: 1,
            };
            scope(&mut pair);
            let _ = pair.client.shutdown(std::net::Shutdown::Both);
            serving.join().unwrap();
        });
    }

    /// Sends `command` with `body`; returns the reply's header and payload.
    fn call(&mut self, command: Command, body: &[u8]) -> (Header, Vec<u8>) {
        let mut message = Vec::new();
        let id = self.next_id;
        self.next_id += 1;
        vgpu_protocol::encode_command(&mut message, id, command, false, &[body]).unwrap();
        vgpu_protocol::send_message(&self.client, &message, &[]).unwrap();
        let frame = self.reader.next_frame(&self.client).unwrap().unwrap();
        assert_eq!(frame.header.msg_id, id);
        (frame.header, frame.payload.to_vec())
    }

    fn version(&mut self) -> Header {
        let mut body = vec![0, 0, 1, 0]; // 0.1
        body.extend_from_slice(b"{}\0");
        self.call(Command::Version, &body).0
    }

    fn read_bar2(&mut self, offset: u64, count: u32) -> (Header, Vec<u8>) {
        self.call(Command::RegionRead, &access(2, offset, count, &[]))
    }
}

fn access(region: u32, offset: u64, count: u32, data: &[u8]) -> Vec<u8> {
    let mut body = offset.to_le_bytes().to_vec();
    body.extend_from_slice(&region.to_le_bytes());
    body.extend_from_slice(&count.to_le_bytes());
    body.extend_from_slice(data);
    body
}

#[test]
fn a_request_before_version_is_refused_and_the_session_goes_on() {
    let vgpu = test_vgpu(1);
    Pair::serve(&vgpu, |pair| {
        let (header, _) = pair.read_bar2(CTRL_MAGIC, 4);
        assert!(header.is_error());
        assert_eq!(header.error, errno::EINVAL as u32);
        assert!(!pair.version().is_error());
        let (header, payload) = pair.read_bar2(CTRL_MAGIC, 4);
        assert!(!header.is_error());
        assert_eq!(&payload[16..20], &0x5550_4776u32.to_le_bytes());
    });
    assert_eq!(vgpu_mdev::VgpuStats::get(&vgpu.stats().refusals), 1);
}

#[test]
fn a_second_version_is_refused() {
    let vgpu = test_vgpu(1);
    Pair::serve(&vgpu, |pair| {
        assert!(!pair.version().is_error());
        let again = pair.version();
        assert!(again.is_error());
        assert_eq!(again.error, errno::EINVAL as u32);
    });
}

fn dma_unmap(pair: &mut Pair, iova: u64, size: u64) -> Header {
    let mut body = 24u32.to_le_bytes().to_vec(); // argsz
    body.extend_from_slice(&0u32.to_le_bytes()); // flags
    body.extend_from_slice(&iova.to_le_bytes());
    body.extend_from_slice(&size.to_le_bytes());
    pair.call(Command::DmaUnmap, &body).0
}

#[test]
fn an_unmap_must_name_a_map_or_cover_none() {
    let vgpu = test_vgpu(1);
    Pair::serve(&vgpu, |pair| {
        pair.version();
        // A map without an fd: reached through the client.
        let mut body = 32u32.to_le_bytes().to_vec(); // argsz
        body.extend_from_slice(&3u32.to_le_bytes()); // READ | WRITE
        body.extend_from_slice(&0u64.to_le_bytes()); // offset
        body.extend_from_slice(&0x10_0000u64.to_le_bytes()); // iova
        body.extend_from_slice(&0x2000u64.to_le_bytes()); // size
        assert!(!pair.call(Command::DmaMap, &body).0.is_error());
        let half = dma_unmap(pair, 0x10_0000, 0x1000);
        assert!(half.is_error());
        assert_eq!(half.error, libc::ENOENT as u32, "half a map");
        assert!(
            !dma_unmap(pair, 0x20_0000, 0x1000).is_error(),
            "nothing there"
        );
        assert!(!dma_unmap(pair, 0x10_0000, 0x2000).is_error(), "the map");
    });
}

#[test]
fn a_region_the_device_lacks_is_einval() {
    let vgpu = test_vgpu(1);
    Pair::serve(&vgpu, |pair| {
        pair.version();
        let (header, _) = pair.call(Command::RegionRead, &access(42, 0, 4, &[]));
        assert!(header.is_error());
        assert_eq!(header.error, errno::EINVAL as u32);
    });
}

#[test]
fn device_state_is_the_vgpus_and_outlives_the_session() {
    let vgpu = test_vgpu(2);
    Pair::serve(&vgpu, |pair| {
        pair.version();
        let (header, _) = pair.call(
            Command::RegionWrite,
            &access(2, CTRL_IRQ_MASK, 4, &0xfu32.to_le_bytes()),
        );
        assert!(!header.is_error());
    });
    // The session is gone; what it wrote is the device's until the owner
    // resets it (the endpoint does, at detach).
    let mut mask = [0u8; 4];
    vgpu.hw()
        .device
        .read(RegionIndex::BAR2, CTRL_IRQ_MASK, &mut mask)
        .unwrap();
    assert_eq!(u32::from_le_bytes(mask), 0xf);
}
