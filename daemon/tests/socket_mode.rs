//! A socket never exists with a looser mode than the daemon asked for,
//! whatever the process umask: another user must not be able to connect
//! to `control.sock` in the moment between creating and restricting it.
//!
//! A file of its own because it sets the process umask, which the other
//! tests of a binary would share.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::Mode;

#[test]
fn sockets_appear_with_their_final_mode_under_a_permissive_umask() {
    rustix::process::umask(Mode::empty());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let (path, stop) = (path.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    seen.insert(meta.permissions().mode() & 0o777);
                }
            }
            seen
        })
    };
    for _ in 0..300 {
        let listener = vgpud::socket::bind_unix(&path, 0o600).unwrap();
        drop(listener);
        std::fs::remove_file(&path).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().unwrap();
    let octal: Vec<String> = seen.iter().map(|mode| format!("{mode:o}")).collect();
    assert!(
        seen.iter().all(|&mode| mode == 0o600),
        "modes seen at the socket's path: {octal:?}"
    );
    // Nothing but the socket's own path was ever used in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
