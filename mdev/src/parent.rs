//! Partitioning: a parent GPU and the vGPU instances created on it.
//!
//! Ownership: [`ParentGpu::create`] hands back a [`VgpuInstance`] that owns
//! everything the vGPU holds. Dropping the instance is the only way to
//! remove it: its VRAM slice goes back to the GPU and its place in the
//! profile's instance count is freed. There is no `remove(uuid)`, so there
//! is no way to remove a vGPU that some thread is still running; the
//! control plane asks the instance's owner to drop it.
//!
//! Locking: the instance table and the GPU's VRAM allocator each have a
//! `std::sync::Mutex`; neither is ever held while taking the other or
//! while doing anything slow (creating a slice's memfd happens with no
//! lock held), so there is no lock order to get wrong.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use uuid::Uuid;

use crate::engine::GpuEngine;
use crate::physical::PhysicalGpu;
use crate::profile::{Profile, ProfileError};
use crate::sched::{SchedulingPolicy, TimeSlice};
use crate::slice::{VramError, VramSlice};
use crate::sync::lock;

/// A vGPU that could not be created (or would not be, in a plan).
#[derive(Debug, Error)]
pub enum CreateError {
    /// The profile breaks its own rules.
    #[error("vGPU {uuid}: invalid profile")]
    Profile {
        /// The vGPU.
        uuid: Uuid,
        /// The broken rule.
        #[source]
        source: ProfileError,
    },
    /// A vGPU with this UUID already exists (or is planned) on the GPU.
    #[error("vGPU {uuid} already exists on {gpu}")]
    DuplicateUuid {
        /// The vGPU.
        uuid: Uuid,
        /// The parent GPU.
        gpu: String,
    },
    /// The profile's instance limit is reached.
    #[error("vGPU {uuid}: profile {profile} allows {max} instances; {existing} exist")]
    InstanceLimit {
        /// The vGPU.
        uuid: Uuid,
        /// The profile.
        profile: String,
        /// The profile's `max_instances`.
        max: u32,
        /// Instances of it now (counting earlier requests of a plan).
        existing: u32,
    },
    /// The GPU has no room for the vGPU's VRAM slice.
    #[error("vGPU {uuid}: no room for its VRAM slice")]
    Vram {
        /// The vGPU.
        uuid: Uuid,
        /// How much VRAM was asked for, and how much is free.
        #[source]
        source: VramError,
    },
}

/// One created vGPU: its identity, type and VRAM. Dropping it releases the
/// VRAM slice and its place in the profile's instance count.
#[derive(Debug)]
pub struct VgpuInstance {
    /// The vGPU's UUID.
    pub uuid: Uuid,
    /// Its type.
    pub profile: Arc<Profile>,
    /// Its VRAM.
    pub slice: VramSlice,
    // Declared after `slice` so that it drops after it: the instance still
    // counts until its VRAM is back.
    _registration: Registration,
}

/// What [`ParentGpu::instances`] lists about one vGPU.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceSummary {
    /// The vGPU's UUID.
    pub uuid: Uuid,
    /// Its profile's name.
    pub profile: String,
    /// Where its slice sits in the GPU's VRAM, in bytes.
    pub slice_offset: u64,
    /// Size of its slice in bytes.
    pub slice_size: u64,
}

/// A physical GPU, the vGPUs on it, and the engine that runs their work.
/// Share it with `Arc`.
#[derive(Debug)]
pub struct ParentGpu {
    gpu: Arc<dyn PhysicalGpu>,
    instances: Arc<Mutex<InstanceTable>>,
    /// The GPU's engine thread and its scheduler.
    engine: GpuEngine,
}

#[derive(Debug, Default)]
struct InstanceTable {
    entries: HashMap<Uuid, Entry>,
}

#[derive(Debug)]
struct Entry {
    profile: Arc<Profile>,
    /// (offset, size); `None` while the slice is being created.
    slice: Option<(u64, u64)>,
}

impl InstanceTable {
    fn count(&self, profile: &str) -> u32 {
        let count = self
            .entries
            .values()
            .filter(|entry| entry.profile.name == profile)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// Keeps a vGPU's entry in the instance table; removes it when dropped.
#[derive(Debug)]
struct Registration {
    instances: Arc<Mutex<InstanceTable>>,
    uuid: Uuid,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.instances).entries.remove(&self.uuid);
    }
}

impl ParentGpu {
    /// A parent GPU with no vGPUs yet, whose engine shares work by
    /// `policy` in slices of `slice`.
    pub fn with_schedule(
        gpu: Arc<dyn PhysicalGpu>,
        policy: SchedulingPolicy,
        slice: TimeSlice,
    ) -> std::io::Result<Self> {
        let engine = GpuEngine::start(gpu.id(), policy, slice)?;
        Ok(Self {
            gpu,
            instances: Arc::default(),
            engine,
        })
    }

    /// A parent GPU with the default schedule (best-effort, 2 ms slices).
    ///
    /// # Panics
    ///
    /// If the engine thread cannot be started (the host is out of
    /// threads); the daemon uses [`with_schedule`](Self::with_schedule) and
    /// reports that instead.
    pub fn new(gpu: Arc<dyn PhysicalGpu>) -> Self {
        Self::with_schedule(gpu, SchedulingPolicy::default(), TimeSlice::default())
            .expect("cannot start the GPU's engine thread")
    }

    /// The GPU's engine, which vGPUs join when powered on.
    pub fn engine(&self) -> &GpuEngine {
        &self.engine
    }

    /// The physical GPU.
    pub fn gpu(&self) -> &Arc<dyn PhysicalGpu> {
        &self.gpu
    }

    /// Creates vGPU `uuid` of type `profile`, refusing a UUID that exists
    /// on this GPU, a profile at its instance limit, or a slice that does
    /// not fit in the free VRAM.
    pub fn create(&self, uuid: Uuid, profile: Arc<Profile>) -> Result<VgpuInstance, CreateError> {
        profile
            .validate()
            .map_err(|source| CreateError::Profile { uuid, source })?;
        let registration = {
            let mut table = lock(&self.instances);
            self.admit(&table, uuid, &profile)?;
            // Reserve the UUID and the count before the slowish memfd work,
            // so that concurrent creates cannot both pass the checks.
            table.entries.insert(
                uuid,
                Entry {
                    profile: Arc::clone(&profile),
                    slice: None,
                },
            );
            Registration {
                instances: Arc::clone(&self.instances),
                uuid,
            }
        };
        // On failure the registration drops and takes the reservation back.
        let slice = self
            .gpu
            .allocate_slice(profile.framebuffer)
            .map_err(|source| CreateError::Vram { uuid, source })?;
        if let Some(entry) = lock(&self.instances).entries.get_mut(&uuid) {
            entry.slice = Some((slice.phys_offset(), slice.size()));
        }
        tracing::info!(
            gpu = self.gpu.id(),
            %uuid,
            profile = %profile.name,
            offset = slice.phys_offset(),
            "vGPU created"
        );
        Ok(VgpuInstance {
            uuid,
            profile,
            slice,
            _registration: registration,
        })
    }

    /// The vGPUs on this GPU, by UUID (ones still being created are left
    /// out).
    pub fn instances(&self) -> Vec<InstanceSummary> {
        let mut list: Vec<InstanceSummary> = lock(&self.instances)
            .entries
            .iter()
            .filter_map(|(&uuid, entry)| {
                let (slice_offset, slice_size) = entry.slice?;
                Some(InstanceSummary {
                    uuid,
                    profile: entry.profile.name.clone(),
                    slice_offset,
                    slice_size,
                })
            })
            .collect();
        list.sort_by_key(|summary| summary.uuid);
        list
    }

    /// Checks that `requests`, created in order on top of the vGPUs that
    /// exist now, would all succeed, with the same rules and errors as
    /// [`Self::create`]; nothing is created. Used to validate a whole
    /// configuration before creating any of it.
    pub fn plan(&self, requests: &[(Uuid, Arc<Profile>)]) -> Result<(), CreateError> {
        let mut planned = InstanceTable::default();
        {
            let table = lock(&self.instances);
            for (&uuid, entry) in &table.entries {
                planned.entries.insert(
                    uuid,
                    Entry {
                        profile: Arc::clone(&entry.profile),
                        slice: entry.slice,
                    },
                );
            }
        }
        let mut vram = self.gpu.vram_placement();
        for (uuid, profile) in requests {
            let uuid = *uuid;
            profile
                .validate()
                .map_err(|source| CreateError::Profile { uuid, source })?;
            self.admit(&planned, uuid, profile)?;
            let offset = vram
                .allocate(profile.framebuffer)
                .map_err(|source| CreateError::Vram { uuid, source })?;
            planned.entries.insert(
                uuid,
                Entry {
                    profile: Arc::clone(profile),
                    slice: Some((offset, profile.framebuffer)),
                },
            );
        }
        Ok(())
    }

    /// How many more vGPUs of `profile` [`Self::create`] could make now:
    /// the instances its limit still allows, or the slices that still fit
    /// in the free VRAM, whichever is fewer. Bounded by the VRAM's size in
    /// units of the profile's slice, whatever `max_instances` says.
    pub fn available(&self, profile: &Profile) -> u32 {
        let existing = lock(&self.instances).count(&profile.name);
        let allowed = profile.max_instances.saturating_sub(existing);
        let mut vram = self.gpu.vram_placement();
        let mut fits = 0;
        while fits < allowed && vram.allocate(profile.framebuffer).is_ok() {
            fits += 1;
        }
        fits
    }

    /// Instances of the profile named `profile` on this GPU.
    pub fn count(&self, profile: &str) -> u32 {
        lock(&self.instances).count(profile)
    }

    /// The UUID and instance-count rules.
    fn admit(
        &self,
        table: &InstanceTable,
        uuid: Uuid,
        profile: &Profile,
    ) -> Result<(), CreateError> {
        if table.entries.contains_key(&uuid) {
            return Err(CreateError::DuplicateUuid {
                uuid,
                gpu: self.gpu.id().to_owned(),
            });
        }
        let existing = table.count(&profile.name);
        if existing >= profile.max_instances {
            return Err(CreateError::InstanceLimit {
                uuid,
                profile: profile.name.clone(),
                max: profile.max_instances,
                existing,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::profile::tests::profile;
    use crate::sim::SimGpu;

    const MIB: u64 = 1 << 20;

    fn parent(vram: u64) -> ParentGpu {
        ParentGpu::new(Arc::new(SimGpu::new("gpu0", vram).unwrap()))
    }

    #[test]
    fn available_is_the_fewer_of_instances_left_and_slices_that_fit() {
        let gpu = parent(64 * MIB);
        let p = Arc::new(profile("p", 16 * MIB, 3));
        assert_eq!(gpu.available(&p), 3);
        let _a = gpu.create(uuid(1), Arc::clone(&p)).unwrap();
        assert_eq!(gpu.available(&p), 2);
        let big = Arc::new(profile("big", 32 * MIB, 9));
        assert_eq!(gpu.available(&big), 1, "one 32 MiB block is left aligned");
        let _b = gpu.create(uuid(2), Arc::clone(&big)).unwrap();
        assert_eq!(gpu.available(&p), 1);
        assert_eq!(gpu.available(&big), 0);
        assert_eq!(gpu.count("p"), 1);
    }

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn free_vram(parent: &ParentGpu) -> u64 {
        parent.gpu().vram_placement().free_bytes()
    }

    #[test]
    fn create_gives_the_instance_its_slice_and_lists_it() {
        let parent = parent(8 * MIB);
        let small = Arc::new(profile("small", 2 * MIB, 4));
        let vgpu = parent.create(uuid(1), Arc::clone(&small)).unwrap();
        assert_eq!(vgpu.uuid, uuid(1));
        assert_eq!(vgpu.profile, small);
        assert_eq!(vgpu.slice.size(), 2 * MIB);
        assert_eq!(
            parent.instances(),
            vec![InstanceSummary {
                uuid: uuid(1),
                profile: "small".into(),
                slice_offset: vgpu.slice.phys_offset(),
                slice_size: 2 * MIB,
            }]
        );
        assert_eq!(free_vram(&parent), 6 * MIB);
    }

    #[test]
    fn duplicate_uuid_is_refused() {
        let parent = parent(8 * MIB);
        let small = Arc::new(profile("small", MIB, 4));
        let _first = parent.create(uuid(1), Arc::clone(&small)).unwrap();
        let err = parent.create(uuid(1), small).unwrap_err();
        assert!(matches!(err, CreateError::DuplicateUuid { .. }));
        assert_eq!(parent.instances().len(), 1);
    }

    #[test]
    fn instance_limit_is_refused_with_the_counts() {
        let parent = parent(8 * MIB);
        let limited = Arc::new(profile("vgpu-1g", MIB, 2));
        let _vgpus: Vec<_> = (0..2)
            .map(|n| parent.create(uuid(n), Arc::clone(&limited)).unwrap())
            .collect();
        let err = parent.create(uuid(9), limited).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "vGPU {}: profile vgpu-1g allows 2 instances; 2 exist",
                uuid(9)
            )
        );
    }

    #[test]
    fn instance_limits_are_per_profile() {
        let parent = parent(8 * MIB);
        let a = Arc::new(profile("a", MIB, 1));
        let b = Arc::new(profile("b", MIB, 1));
        let _a = parent.create(uuid(1), a).unwrap();
        assert!(parent.create(uuid(2), b).is_ok());
    }

    #[test]
    fn vram_shortage_is_refused_naming_the_amounts() {
        let parent = parent(4 * MIB);
        let big = Arc::new(profile("big", 4 * MIB, 4));
        let _first = parent.create(uuid(1), Arc::clone(&big)).unwrap();
        let err = parent.create(uuid(2), big).unwrap_err();
        assert!(matches!(err, CreateError::Vram { .. }));
        assert_eq!(
            err.source().unwrap().to_string(),
            "gpu0: cannot place a 4 MiB slice: 0 B free, largest free block 0 B"
        );
    }

    #[test]
    fn failed_create_leaves_nothing_behind() {
        let parent = parent(2 * MIB);
        let big = Arc::new(profile("big", 4 * MIB, 1));
        assert!(parent.create(uuid(1), big).is_err());
        assert!(parent.instances().is_empty());
        // Neither the UUID nor the profile's only instance stays reserved.
        let fits = Arc::new(profile("big", 2 * MIB, 1));
        assert!(parent.create(uuid(1), fits).is_ok());
    }

    #[test]
    fn invalid_profile_is_refused() {
        let parent = parent(2 * MIB);
        let bad = Arc::new(profile("bad", 3 * MIB, 1));
        let err = parent.create(uuid(1), bad).unwrap_err();
        assert!(matches!(
            err,
            CreateError::Profile {
                source: ProfileError::Framebuffer { .. },
                ..
            }
        ));
    }

    #[test]
    fn dropping_an_instance_releases_its_vram_and_count() {
        let parent = parent(2 * MIB);
        let only = Arc::new(profile("only", 2 * MIB, 1));
        let vgpu = parent.create(uuid(1), Arc::clone(&only)).unwrap();
        drop(vgpu);
        assert!(parent.instances().is_empty());
        assert_eq!(free_vram(&parent), 2 * MIB);
        assert!(parent.create(uuid(2), only).is_ok());
    }

    #[test]
    fn concurrent_creates_never_exceed_the_instance_limit() {
        let parent = Arc::new(parent(64 * MIB));
        let limited = Arc::new(profile("limited", MIB, 3));
        let created: Vec<Option<VgpuInstance>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|n| {
                    let (parent, limited) = (&parent, &limited);
                    scope.spawn(move || parent.create(uuid(n), Arc::clone(limited)).ok())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(created.iter().flatten().count(), 3);
        assert_eq!(parent.instances().len(), 3);
    }

    #[test]
    fn plan_accepts_what_create_would_and_creates_nothing() {
        let parent = parent(8 * MIB);
        let p = Arc::new(profile("p", 2 * MIB, 4));
        let requests: Vec<_> = (0..4).map(|n| (uuid(n), Arc::clone(&p))).collect();
        parent.plan(&requests).unwrap();
        assert!(parent.instances().is_empty());
        assert_eq!(free_vram(&parent), 8 * MIB);
    }

    #[test]
    fn plan_refuses_a_uuid_listed_twice() {
        let parent = parent(8 * MIB);
        let p = Arc::new(profile("p", MIB, 4));
        let err = parent
            .plan(&[(uuid(1), Arc::clone(&p)), (uuid(1), p)])
            .unwrap_err();
        assert!(matches!(err, CreateError::DuplicateUuid { .. }));
    }

    #[test]
    fn plan_counts_earlier_requests_and_existing_instances() {
        let parent = parent(8 * MIB);
        let p = Arc::new(profile("p", MIB, 2));
        let _existing = parent.create(uuid(1), Arc::clone(&p)).unwrap();
        let err = parent
            .plan(&[(uuid(2), Arc::clone(&p)), (uuid(3), p)])
            .unwrap_err();
        assert!(matches!(
            err,
            CreateError::InstanceLimit {
                existing: 2,
                max: 2,
                ..
            }
        ));
    }

    #[test]
    fn plan_refuses_requests_that_together_exceed_vram() {
        let parent = parent(4 * MIB);
        let p = Arc::new(profile("p", 2 * MIB, 8));
        let _existing = parent.create(uuid(1), Arc::clone(&p)).unwrap();
        parent.plan(&[(uuid(2), Arc::clone(&p))]).unwrap();
        let err = parent
            .plan(&[(uuid(2), Arc::clone(&p)), (uuid(3), p)])
            .unwrap_err();
        assert!(matches!(err, CreateError::Vram { uuid: u, .. } if u == uuid(3)));
    }
}
