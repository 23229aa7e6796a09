//! The fuzz seed corpus (`fuzz/seeds/vfio_user_codec/`), replayed through
//! the decoder so that CI exercises it without nightly. Each seed is one
//! byte of fd count followed by valid messages back to back.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use vgpu_protocol::Header;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/vfio_user_codec")
}

#[test]
fn every_seed_decodes_cleanly() {
    let mut seen = 0;
    for entry in fs::read_dir(seed_dir()).expect("seed directory") {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let (&fds, mut stream) = data.split_first().expect("seed has an fd-count byte");
        assert!(!stream.is_empty(), "{path:?}");
        while !stream.is_empty() {
            let header = Header::parse(stream).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let size = header.msg_size as usize;
            let message = stream
                .get(..size)
                .unwrap_or_else(|| panic!("{path:?}: truncated"));
            decode(message, usize::from(fds)).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            stream = &stream[size..];
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} seeds");
}

/// Rewrites the seed files: `cargo test -p vgpu-protocol --test seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/seeds; run by hand when the message set changes"]
fn regenerate_seeds() {
    let dir = seed_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, message, fds) in valid_messages() {
        let mut seed = vec![fds as u8];
        seed.extend(message);
        fs::write(dir.join(name), seed).unwrap();
    }
    let mut pipelined = vec![0u8];
    for (_, message, fds) in valid_messages() {
        if fds == 0 {
            pipelined.extend(message);
        }
    }
    fs::write(dir.join("pipelined"), pipelined).unwrap();
}
