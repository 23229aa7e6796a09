//! Reloading the configuration file (SIGHUP, `systemctl reload`): the new
//! file's `[[vgpu]]`s are compared with the ones running from the old
//! file. New ones start, removed ones stop, changed ones restart; one that
//! a client is attached to is left running as it is, with a log line, and
//! tried again at the next reload. Profiles, the DMA allowance and socket
//! defaults apply to vGPUs started from then on. Keys that only take
//! effect at start (the GPUs, runtime_dir, state_dir, control_group,
//! metrics_listen, metrics_allow_remote) must be unchanged, or nothing is
//! reloaded.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{Registry, Settings, lock};
use crate::config::{Config, VgpuConfig};
use crate::control::protocol::VgpuOrigin;
use crate::registry::StartRequest;

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub started: Vec<Uuid>,
    pub stopped: Vec<Uuid>,
    pub restarted: Vec<Uuid>,
    /// Removed or changed in the file, but attached: left running.
    pub kept: Vec<Uuid>,
    /// Could not be started (with why); the rest of the reload stands.
    pub failed: Vec<(Uuid, String)>,
}

/// Why nothing was reloaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    NeedsRestart(String),
}

impl Registry {
    /// Applies `config`, the configuration file as it is now.
    pub fn reload(&self, config: &Config, fixed: &Config) -> Result<ReloadOutcome, ReloadError> {
        let mut changed = Vec::new();
        if config.gpus != fixed.gpus {
            changed.push("[[gpu]]");
        }
        if config.runtime_dir != fixed.runtime_dir {
            changed.push("runtime_dir");
        }
        if config.state_dir != fixed.state_dir {
            changed.push("state_dir");
        }
        if config.control_access != fixed.control_access {
            changed.push("control_group");
        }
        if (config.metrics_listen, config.metrics_allow_remote)
            != (fixed.metrics_listen, fixed.metrics_allow_remote)
        {
            changed.push("metrics_listen");
        }
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart(format!(
                "{} changed, which takes a restart; nothing was reloaded",
                changed.join(", ")
            )));
        }
        let _changes = lock(&self.changes);
        for v in &config.vgpus {
            if lock(&self.definitions).by_uuid.contains_key(&v.uuid) {
                return Err(ReloadError::NeedsRestart(format!(
                    "vGPU {} is both a [[vgpu]] of the file and a definition in the state directory; undefine one; nothing was reloaded",
                    v.uuid
                )));
            }
        }
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Settings::from_config(config);

        let running: BTreeMap<Uuid, Option<VgpuConfig>> = self
            .running()
            .iter()
            .filter(|(_, r)| r.origin == VgpuOrigin::Config)
            .map(|(u, r)| (*u, r.config.clone()))
            .collect();
        let wanted: BTreeMap<Uuid, &VgpuConfig> =
            config.vgpus.iter().map(|v| (v.uuid, v)).collect();
        let mut outcome = ReloadOutcome::default();

        for (uuid, old) in &running {
            let restart = match wanted.get(uuid) {
                None => false,
                Some(new) if old.as_ref().is_some_and(|old| same(old, new)) => continue,
                Some(_) => true,
            };
            match self.stop_locked(*uuid, false, &[VgpuOrigin::Config]) {
                Ok(_) if restart => outcome.restarted.push(*uuid),
                Ok(_) => outcome.stopped.push(*uuid),
                Err(e) => {
                    tracing::warn!(%uuid, error = %e, "reload: the vGPU changed or left the file but stays as it is");
                    outcome.kept.push(*uuid);
                }
            }
        }
        for v in &config.vgpus {
            let origin = self.running().get(&v.uuid).map(|r| r.origin);
            match origin {
                // Unchanged, or kept for its client.
                Some(VgpuOrigin::Config) => continue,
                // A transient vGPU of `create` holds the UUID: it is left
                // as it is, and the file's vGPU did not start.
                Some(_) => {
                    let why = format!(
                        "vGPU {} runs as a transient vGPU made by create; `vgpuctl remove {}` and reload again",
                        v.uuid, v.uuid
                    );
                    tracing::error!(uuid = %v.uuid, error = %why, "reload: cannot start the vGPU");
                    outcome.failed.push((v.uuid, why));
                    continue;
                }
                None => {}
            }
            let request = StartRequest {
                uuid: v.uuid,
                gpu: Some(v.gpu.clone()),
                profile: v.profile.clone(),
                // Its own socket keys over the file's defaults, as at
                // start-up: what `same` compares at the next reload.
                access: v.access,
                origin: VgpuOrigin::Config,
                config: Some(v.clone()),
            };
            match self.start_locked(request) {
                Ok(_) => {
                    if !outcome.restarted.contains(&v.uuid) {
                        outcome.started.push(v.uuid);
                    }
                }
                Err(e) => {
                    tracing::error!(uuid = %v.uuid, error = %e, "reload: cannot start the vGPU");
                    outcome.restarted.retain(|u| *u != v.uuid);
                    outcome.failed.push((v.uuid, e.to_string()));
                }
            }
        }
        Ok(outcome)
    }
}

/// Whether a running `[[vgpu]]` matches the file's entry: same GPU, same
/// profile (every key of it), same socket ownership.
fn same(old: &VgpuConfig, new: &VgpuConfig) -> bool {
    old.gpu == new.gpu && *old.profile == *new.profile && old.access == new.access
}
