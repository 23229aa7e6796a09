//! Property tests: the decoder is total, and framing reproduces any stream
//! of valid messages, however it is cut up.

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread;

use common::*;
use proptest::prelude::*;
use vgpu_protocol::{Header, MessageReader, decode_request, send_message};

/// Decodes whatever `bytes` hold; the property is that this returns.
fn decode_any(bytes: &[u8], fds: usize) {
    match Header::parse(bytes) {
        Ok(header) => {
            let payload = bytes.get(16..).unwrap_or_default();
            if let Err(e) = decode_request(&header, payload, fds) {
                assert_ne!(e.errno(), 0, "{e}");
            }
        }
        Err(e) => assert_ne!(e.errno(), 0, "{e}"),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { len: usize },
    Append { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

fn apply(message: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Flip { at, xor } => {
            let len = message.len();
            if len > 0 {
                message[at % len] ^= xor;
            }
        }
        Mutation::Truncate { len } => message.truncate(len % (message.len() + 1)),
        Mutation::Append { bytes } => message.extend_from_slice(bytes),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128), fds in 0usize..20) {
        decode_any(&bytes, fds);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
        fix_size in any::<bool>(),
        fds in 0usize..4,
    ) {
        let messages = valid_messages();
        let (_, mut message, _) = messages[which.index(messages.len())].clone();
        for m in &mutations {
            apply(&mut message, m);
        }
        if fix_size && message.len() >= 8 {
            let len = message.len() as u32;
            message[4..8].copy_from_slice(&len.to_le_bytes());
        }
        decode_any(&message, fds);
    }
}

/// One message of the stream and the fds it carries.
#[derive(Debug, Clone)]
struct Sent {
    bytes: Vec<u8>,
    fds: usize,
}

fn stream() -> impl Strategy<Value = (Vec<Sent>, Vec<prop::sample::Index>)> {
    let one = (any::<prop::sample::Index>(), 0usize..3).prop_map(|(which, fds)| {
        let messages = valid_messages();
        let (_, bytes, _) = messages[which.index(messages.len())].clone();
        Sent { bytes, fds }
    });
    (
        prop::collection::vec(one, 1..12),
        prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    )
}

fn inode(fd: BorrowedFd<'_>) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_ino
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn framing_reproduces_any_cut_of_the_stream((messages, cuts) in stream()) {
        let whole: Vec<u8> = messages.iter().flat_map(|m| m.bytes.iter().copied()).collect();
        let fd_sets: Vec<Vec<OwnedFd>> = messages
            .iter()
            .map(|m| (0..m.fds).map(|_| OwnedFd::from(UnixStream::pair().unwrap().0)).collect())
            .collect();
        let inodes: Vec<Vec<u64>> =
            fd_sets.iter().map(|set| set.iter().map(|fd| inode(fd.as_fd())).collect()).collect();
        // Cut points: random ones, plus the bounds of every message with fds,
        // since a sender gives a message's fds to a sendmsg of that message alone.
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(whole.len())).collect();
        let mut start = 0;
        let mut fd_at = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.fds > 0 {
                points.push(start);
                points.push(start + m.bytes.len());
                fd_at.push((start, i));
            }
            start += m.bytes.len();
        }
        points.push(0);
        points.push(whole.len());
        points.sort_unstable();
        points.dedup();

        let (server, client) = UnixStream::pair().unwrap();
        let writer = thread::spawn(move || {
            for w in points.windows(2) {
                let fds: Vec<BorrowedFd<'_>> = fd_at
                    .iter()
                    .find(|(at, _)| *at == w[0])
                    .map(|(_, i)| fd_sets[*i].iter().map(|fd| fd.as_fd()).collect())
                    .unwrap_or_default();
                send_message(&client, &whole[w[0]..w[1]], &fds).unwrap();
            }
        });
        let mut reader = MessageReader::new(1 << 20);
        for (i, m) in messages.iter().enumerate() {
            let frame = reader.next_frame(&server).unwrap().unwrap();
            let mut got = frame.header.to_raw().as_bytes_vec();
            got.extend_from_slice(frame.payload);
            prop_assert_eq!(&got, &m.bytes, "message {}", i);
            let got_inodes: Vec<u64> = frame.fds.iter().map(inode).collect();
            prop_assert_eq!(&got_inodes, &inodes[i], "fds of message {}", i);
        }
        writer.join().unwrap();
        prop_assert!(reader.next_frame(&server).unwrap().is_none());
    }
}

trait AsBytesVec {
    fn as_bytes_vec(&self) -> Vec<u8>;
}

impl AsBytesVec for vgpu_protocol::wire::RawHeader {
    fn as_bytes_vec(&self) -> Vec<u8> {
        zerocopy::IntoBytes::as_bytes(self).to_vec()
    }
}
