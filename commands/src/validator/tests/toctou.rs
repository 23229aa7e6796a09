//! What runs is what was checked: the result is the one read the
//! validator made of each range, whatever the memory holds before, during
//! or after validation.

use super::*;

#[test]
fn memory_written_after_validate_changes_nothing() {
    let mut memory = memory();
    memory.write_words(BATCHES, &stream(|b| b.fill(0x1000, 4, 5).batch_end()));
    let words = stream(|b| b.fence32(0x20, 1, false).batch_start(BATCHES, 24));
    let stream = submit(&mut memory, &words).unwrap();
    let before: Vec<CommandAt> = stream.commands().collect();
    // The guest now turns the ring and the batch into privileged commands.
    let hostile = self::stream(|b| b.set_pt_root(0).set_pt_root(0));
    memory.write_ring(RING, RING_SIZE, 0, &hostile);
    memory.write_words(
        BATCHES,
        &self::stream(|b| b.copy(0, 0, 4).with_flags(FLAG_PHYSICAL)),
    );
    let after: Vec<CommandAt> = stream.commands().collect();
    assert_eq!(before, after);
    assert_eq!(
        commands(&stream),
        [
            fence(0x20, 1),
            Command::Fill {
                dst: va(0x1000),
                bytes: 4,
                pattern: 5
            }
        ]
    );
}

/// Memory that answers every read with the next of a list of versions of
/// its contents, as a guest rewriting its memory between reads would.
struct ChangingMemory {
    versions: Vec<TestMemory>,
    reads: usize,
    log: Vec<(u64, usize)>,
}

impl StreamMemory for ChangingMemory {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        let version = self.reads.min(self.versions.len() - 1);
        self.reads += 1;
        self.log.push((va.get(), out.len()));
        self.versions[version].read(va, out)
    }
}

#[test]
fn every_range_is_read_once_and_the_result_is_that_read() {
    // Version k of memory holds a batch whose FENCE writes k; the ring
    // changes from version to version too, into privileged commands.
    let ring_words = stream(|b| b.batch_start(BATCHES, 24).batch_start(BATCHES + 0x100, 24));
    let versions = (0..4)
        .map(|k| {
            let mut memory = memory();
            let ring_now = if k == 0 {
                ring_words.clone()
            } else {
                stream(|b| b.set_context(k).set_context(k))
            };
            memory.write_ring(RING, RING_SIZE, 0, &ring_now);
            for batch in [BATCHES, BATCHES + 0x100] {
                memory.write_words(batch, &stream(|b| b.fence32(0x20, k, false).batch_end()));
            }
            memory
        })
        .collect();
    let mut memory = ChangingMemory {
        versions,
        reads: 0,
        log: Vec::new(),
    };
    let put = 4 * ring_words.len() as u32;
    let stream = Validator::new()
        .validate(&ring(0, put), &mut memory)
        .unwrap();
    // One read of the ring (version 0), one of each batch (versions 1, 2).
    assert_eq!(
        memory.log,
        [(RING, 32), (BATCHES, 24), (BATCHES + 0x100, 24)]
    );
    assert_eq!(commands(&stream), [fence(0x20, 1), fence(0x20, 2)]);
}

#[test]
fn a_batch_that_turns_privileged_on_its_second_read_is_refused() {
    let ring_words = stream(|b| b.batch_start(BATCHES, 24).batch_start(BATCHES, 24));
    let mut benign = memory();
    benign.write_ring(RING, RING_SIZE, 0, &ring_words);
    benign.write_words(BATCHES, &stream(|b| b.fence32(0x20, 1, false).batch_end()));
    let mut hostile = benign.clone();
    hostile.write_words(
        BATCHES,
        &stream(|b| b.nop(1).set_pt_root(0).nop(1).batch_end()),
    );
    let mut memory = ChangingMemory {
        versions: vec![benign.clone(), benign, hostile],
        reads: 0,
        log: Vec::new(),
    };
    let result = Validator::new().validate(&ring(0, 32), &mut memory);
    assert_refused(result, ChannelErrorCode::Privileged, BATCHES + 4);
}
