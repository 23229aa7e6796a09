/work/main/guest/target/x86_64-unknown-linux-gnu/release/deps/vgpu_guest-6dc4ae51553ef115.d: src/lib.rs src/cmos.rs src/config_space.rs src/dma.rs src/draw.rs src/drm/mod.rs src/drm/card.rs src/drm/mode.rs src/drm/sys.rs src/fbdev.rs src/mapping.rs src/modeset.rs src/pattern.rs src/pci.rs src/probe.rs src/registers.rs src/report.rs src/scanout.rs src/vram.rs src/wait.rs

/work/main/guest/target/x86_64-unknown-linux-gnu/release/deps/libvgpu_guest-6dc4ae51553ef115.rlib: src/lib.rs src/cmos.rs src/config_space.rs src/dma.rs src/draw.rs src/drm/mod.rs src/drm/card.rs src/drm/mode.rs src/drm/sys.rs src/fbdev.rs src/mapping.rs src/modeset.rs src/pattern.rs src/pci.rs src/probe.rs src/registers.rs src/report.rs src/scanout.rs src/vram.rs src/wait.rs

/work/main/guest/target/x86_64-unknown-linux-gnu/release/deps/libvgpu_guest-6dc4ae51553ef115.rmeta: src/lib.rs src/cmos.rs src/config_space.rs src/dma.rs src/draw.rs src/drm/mod.rs src/drm/card.rs src/drm/mode.rs src/drm/sys.rs src/fbdev.rs src/mapping.rs src/modeset.rs src/pattern.rs src/pci.rs src/probe.rs src/registers.rs src/report.rs src/scanout.rs src/vram.rs src/wait.rs

src/lib.rs:
src/cmos.rs:
src/config_space.rs:
src/dma.rs:
src/draw.rs:
src/drm/mod.rs:
src/drm/card.rs:
src/drm/mode.rs:
src/drm/sys.rs:
src/fbdev.rs:
src/mapping.rs:
src/modeset.rs:
src/pattern.rs:
src/pci.rs:
src/probe.rs:
src/registers.rs:
src/report.rs:
src/scanout.rs:
src/vram.rs:
src/wait.rs:
