//! What the MMU registers ask of the GPU MMU: page-table roots,
//! invalidations and the translate port.

use vgpu_emulation::MmuRequest;
use vgpu_mdev::{MmuOutcome, VgpuStats};

use super::Session;
use crate::error_chain::ErrorChain;

impl Session<'_> {
    /// Carries out a request of the MMU registers and reports back to the
    /// device model.
    pub(super) fn mmu_request(&mut self, request: MmuRequest) {
        let outcome = self.vgpu.device().mmu_request(request, &self.aperture);
        match outcome {
            Ok(MmuOutcome::Shadowed(summary)) => {
                if summary.fault_count > 0 {
                    VgpuStats::count(&self.vgpu.stats().refused_ptes, summary.fault_count);
                    let first = summary.faults.first().map(|f| format!("{f}: {}", f.reason));
                    self.vgpu.client_log.log(|| {
                        tracing::warn!(
                            context = summary.ctx.0,
                            refused = summary.fault_count,
                            first = first.as_deref().unwrap_or(""),
                            "page-table entries refused: accesses through them fault"
                        )
                    });
                }
                tracing::debug!(
                    context = summary.ctx.0,
                    mapped = summary.mapped,
                    not_present = summary.not_present,
                    table_reads = summary.walk.tables_read,
                    "page tables shadowed"
                );
            }
            Ok(MmuOutcome::Translated(result)) => {
                if let (Err(reason), MmuRequest::Translate { channel, va, write }) =
                    (&result, request)
                {
                    VgpuStats::count(&self.vgpu.stats().mmu_faults, 1);
                    self.vgpu.client_log.log(|| {
                        tracing::warn!(
                            channel,
                            va = format_args!("{va:#x}"),
                            write,
                            ?reason,
                            "GPU MMU fault"
                        )
                    });
                }
                let effects = self.vgpu.hw().device.complete_translate(result);
                self.apply(effects);
            }
            Err(e) => self
                .vgpu
                .client_log
                .log(|| tracing::error!(error = %ErrorChain(&e), "GPU MMU request failed")),
        }
    }
}
