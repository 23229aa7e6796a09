//! The privileged forms, refused wherever they are.

use super::*;

#[test]
fn copy_with_physical_flag_is_privileged() {
    let mut memory = memory();
    let words = stream(|b| b.nop(1).copy(0x1000, 0x2000, 64).with_flags(FLAG_PHYSICAL));
    let error = assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::Privileged,
        RING + 4,
    );
    assert_eq!(
        error.refusal(),
        &Refusal::Privileged(Privileged::PhysicalAddressing {
            opcode: Opcode::Copy
        })
    );
}

#[test]
fn every_memory_command_with_physical_flag_is_privileged_in_a_batch() {
    let physical: [fn(&mut StreamBuilder) -> &mut StreamBuilder; 9] = [
        |b| b.copy(0, 0, 4),
        |b| b.fill(0, 4, 0),
        |b| b.blit2d(0, 4, 0, 4, 1, 1),
        |b| b.fence32(0, 0, true),
        |b| b.semaphore_wait(0, crate::command::CompareOp::Ge, 0),
        |b| b.batch_start(BATCHES, 4),
        |b| b.timestamp(0),
        |b| b.store_register(0, 0),
        |b| b.set_scanout(0, 0, 4, 1, 1),
    ];
    for build in physical {
        let mut memory = memory();
        let mut batch = StreamBuilder::new();
        batch.nop(1);
        build(&mut batch).with_flags(FLAG_PHYSICAL).batch_end();
        memory.write_words(BATCHES + 0x100, batch.words());
        let words = stream(|b| b.batch_start(BATCHES + 0x100, batch.byte_len()));
        let error = assert_refused(
            submit(&mut memory, &words),
            ChannelErrorCode::Privileged,
            BATCHES + 0x104,
        );
        assert_eq!(error.site().unwrap().level, 1);
    }
}

#[test]
fn privileged_batch_is_refused() {
    let mut memory = memory();
    memory.write_words(BATCHES, &stream(|b| b.batch_end()));
    let words = stream(|b| b.batch_start(BATCHES, 4).with_flags(FLAG_BATCH_PRIVILEGED));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::Privileged,
        RING,
    );
    // Refused before the batch is read.
    assert_eq!(memory.reads().len(), 1);
}

#[test]
fn set_context_is_privileged() {
    let mut memory = memory();
    let words = stream(|b| b.set_context(1));
    let error = assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::Privileged,
        RING,
    );
    assert_eq!(
        error.refusal(),
        &Refusal::Privileged(Privileged::SetContext { context: 1 })
    );
}

#[test]
fn set_pt_root_is_privileged() {
    let mut memory = memory();
    let words = stream(|b| b.timestamp(0).set_pt_root(0x1000_0001));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::Privileged,
        RING + 12,
    );
}

#[test]
fn lri_to_mmu_register_is_refused() {
    for offset in [PT_ROOT_LO, PT_ROOT_HI, MMU_CONTROL] {
        let mut memory = memory();
        let words = stream(|b| b.load_register_imm(offset, 0));
        let error = assert_refused(
            submit(&mut memory, &words),
            ChannelErrorCode::RegisterNotAllowed,
            RING,
        );
        assert!(
            error.to_string().contains("LOAD_REGISTER_IMM to"),
            "{error}"
        );
    }
}

const PT_ROOT_LO: u32 = crate::registers::PT_ROOT_LO_OFFSET;
const PT_ROOT_HI: u32 = crate::registers::PT_ROOT_HI_OFFSET;
const MMU_CONTROL: u32 = crate::registers::MMU_CONTROL_OFFSET;

#[test]
fn lri_to_a_read_only_register_is_refused() {
    let mut memory = memory();
    let words = stream(|b| b.load_register_imm(crate::registers::COMPLETED_FENCE_LO_OFFSET, 0));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::RegisterNotAllowed,
        RING,
    );
}

#[test]
fn lri_to_another_heads_display_register_is_refused() {
    let mut memory = memory();
    let words = stream(|b| b.load_register_imm(0x1100, 0x1000));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::RegisterNotAllowed,
        RING,
    );
}

#[test]
fn store_of_the_page_table_root_is_refused() {
    let mut memory = memory();
    let words = stream(|b| b.store_register(PT_ROOT_LO, 0x1000));
    assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::RegisterNotAllowed,
        RING,
    );
}

#[test]
fn scanout_to_head_1_is_refused() {
    let mut memory = memory();
    let words = stream(|b| b.set_scanout(1, 0x10_0000, 4096, 1024, 768));
    let error = assert_refused(
        submit(&mut memory, &words),
        ChannelErrorCode::DisplayHead,
        RING,
    );
    assert_eq!(
        error.refusal(),
        &Refusal::Privileged(Privileged::OtherHead { head: 1 })
    );
}

#[test]
fn scanout_to_head_0_is_allowed() {
    let mut memory = memory();
    let words = stream(|b| b.set_scanout(0, 0x10_0000, 4096, 1024, 768));
    assert_eq!(submit(&mut memory, &words).unwrap().len(), 1);
}
