/work/main/guest/target/x86_64-unknown-linux-gnu/release/deps/vgpu_guest-35e2ebdf84303493.d: src/main.rs

/work/main/guest/target/x86_64-unknown-linux-gnu/release/deps/vgpu_guest-35e2ebdf84303493: src/main.rs

src/main.rs:
