//! A socket never exists with a looser mode, or another owner or group,
//! than the daemon asked for, whatever the process umask: another user
//! must not be able to connect to `control.sock` in the moment between
//! creating and restricting it.
//!
//! A file of its own because it sets the process umask, which the other
//! tests of a binary would share.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::Mode;
use vgpud::access::SocketAccess;

#[test]
fn sockets_appear_with_their_final_mode_under_a_permissive_umask() {
    rustix::process::umask(Mode::empty());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    // Root gives the socket away, as the daemon does with socket_owner;
    // anyone else can still check the mode.
    let root = rustix::process::geteuid().is_root();
    let access = SocketAccess {
        owner: root.then_some(54321),
        group: root.then_some(54322),
        mode: 0o600,
    };
    let uid = access.owner.unwrap_or(rustix::process::geteuid().as_raw());
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let (path, stop) = (path.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    seen.insert((meta.mode() & 0o7777, meta.uid()));
                }
            }
            seen
        })
    };
    for _ in 0..300 {
        let listener = vgpud::socket::bind_unix(&path, &access).unwrap();
        drop(listener);
        std::fs::remove_file(&path).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().unwrap();
    let octal: Vec<String> = seen
        .iter()
        .map(|(mode, uid)| format!("{mode:o} uid {uid}"))
        .collect();
    assert!(
        seen.iter().all(|&seen| seen == (0o600, uid)),
        "modes and owners seen at the socket's path: {octal:?}"
    );
    // Nothing but the socket's own path was ever used in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
