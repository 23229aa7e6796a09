use super::*;

fn assign(
    irqs: &mut Interrupts<&'static str>,
    index: IrqIndex,
    start: u32,
    triggers: Vec<Option<&'static str>>,
) {
    let count = triggers.len() as u32;
    irqs.set_irqs(SetIrqs {
        index: index as u32,
        action: IrqAction::Trigger,
        start,
        count,
        data: IrqData::Triggers(triggers),
    })
    .unwrap();
}

fn request(
    index: IrqIndex,
    action: IrqAction,
    start: u32,
    count: u32,
    data: IrqData<&'static str>,
) -> SetIrqs<&'static str> {
    SetIrqs {
        index: index as u32,
        action,
        start,
        count,
        data,
    }
}

#[test]
fn info_reports_counts_and_flags_per_index() {
    let irqs: Interrupts<()> = Interrupts::new(5);
    assert_eq!(
        irqs.info(0),
        Ok(IrqInfo {
            index: 0,
            count: 1,
            flags: 7
        })
    );
    assert_eq!(
        irqs.info(1),
        Ok(IrqInfo {
            index: 1,
            count: 1,
            flags: 1
        })
    );
    assert_eq!(
        irqs.info(2),
        Ok(IrqInfo {
            index: 2,
            count: 5,
            flags: 9
        })
    );
    assert_eq!(irqs.info(3).unwrap().flags, IRQ_INFO_EVENTFD);
    assert_eq!(irqs.info(4).unwrap().count, 1);
    assert_eq!(irqs.info(5), Err(IrqError::InvalidIndex(5)));
    assert_eq!(IrqIndex::try_from(4), Ok(IrqIndex::Req));
}

#[test]
fn raise_prefers_msix_then_msi_then_intx() {
    let mut irqs = Interrupts::new(3);
    assign(&mut irqs, IrqIndex::Intx, 0, vec![Some("intx")]);
    assert_eq!(irqs.raise(1, false), Some(&"intx"));
    irqs.set_irqs(request(
        IrqIndex::Intx,
        IrqAction::Unmask,
        0,
        1,
        IrqData::None,
    ))
    .unwrap();
    assign(&mut irqs, IrqIndex::Msi, 0, vec![Some("msi")]);
    assert_eq!(irqs.raise(1, false), Some(&"msi"));
    assign(&mut irqs, IrqIndex::Msix, 1, vec![Some("msix1")]);
    assert_eq!(irqs.raise(1, false), Some(&"msix1"));
    // Vector 0 has no MSI-X trigger, and vector 7 does not exist: both
    // fall back to MSI.
    assert_eq!(irqs.raise(0, false), Some(&"msi"));
    assert_eq!(irqs.raise(7, false), Some(&"msi"));
}

#[test]
fn intx_auto_masks_until_unmasked() {
    let mut irqs = Interrupts::new(1);
    assign(&mut irqs, IrqIndex::Intx, 0, vec![Some("intx")]);
    assert_eq!(irqs.raise(0, false), Some(&"intx"));
    assert!(irqs.intx_asserted() && irqs.intx_masked());
    assert_eq!(irqs.raise(0, false), None, "auto-masked");
    irqs.set_irqs(request(
        IrqIndex::Intx,
        IrqAction::Unmask,
        0,
        1,
        IrqData::None,
    ))
    .unwrap();
    assert!(!irqs.intx_asserted());
    assert_eq!(irqs.raise(0, false), Some(&"intx"));
}

#[test]
fn intx_mask_action_blocks_delivery() {
    let mut irqs = Interrupts::new(1);
    assign(&mut irqs, IrqIndex::Intx, 0, vec![Some("intx")]);
    irqs.set_irqs(request(
        IrqIndex::Intx,
        IrqAction::Mask,
        0,
        1,
        IrqData::Bool(vec![true]),
    ))
    .unwrap();
    assert_eq!(irqs.raise(0, false), None);
    assert!(!irqs.intx_asserted());
    // A false flag selects nothing.
    irqs.set_irqs(request(
        IrqIndex::Intx,
        IrqAction::Unmask,
        0,
        1,
        IrqData::Bool(vec![false]),
    ))
    .unwrap();
    assert!(irqs.intx_masked());
}

#[test]
fn intx_is_not_delivered_while_the_command_register_disables_it() {
    let mut irqs = Interrupts::new(1);
    assign(&mut irqs, IrqIndex::Intx, 0, vec![Some("intx")]);
    assert_eq!(irqs.raise(0, true), None);
    assert!(!irqs.intx_asserted() && !irqs.intx_masked());
    assert_eq!(irqs.raise(0, false), Some(&"intx"));
}

#[test]
fn fewer_triggers_than_count_unassign_the_rest_of_the_range() {
    let mut irqs = Interrupts::new(8);
    assign(&mut irqs, IrqIndex::Msix, 0, vec![Some("a"); 8]);
    // QEMU sends chunks: here vectors 2..6 get one trigger and an fd of -1
    // is not needed to drop the others.
    irqs.set_irqs(request(
        IrqIndex::Msix,
        IrqAction::Trigger,
        2,
        4,
        IrqData::Triggers(vec![Some("b"), None]),
    ))
    .unwrap();
    let got: Vec<_> = (0..8)
        .map(|v| irqs.trigger(IrqIndex::Msix, v).copied())
        .collect();
    assert_eq!(
        got,
        vec![
            Some("a"),
            Some("a"),
            Some("b"),
            None,
            None,
            None,
            Some("a"),
            Some("a")
        ]
    );
}

#[test]
fn count_zero_with_data_none_disables_the_whole_index() {
    let mut irqs = Interrupts::new(4);
    assign(&mut irqs, IrqIndex::Msix, 0, vec![Some("a"); 4]);
    assign(&mut irqs, IrqIndex::Msi, 0, vec![Some("msi")]);
    irqs.set_irqs(request(
        IrqIndex::Msix,
        IrqAction::Trigger,
        0,
        0,
        IrqData::None,
    ))
    .unwrap();
    assert!((0..4).all(|v| irqs.trigger(IrqIndex::Msix, v).is_none()));
    assert_eq!(
        irqs.trigger(IrqIndex::Msi, 0),
        Some(&"msi"),
        "other indices untouched"
    );
}

#[test]
fn out_of_range_start_or_count_is_rejected_without_change() {
    let mut irqs = Interrupts::new(4);
    assign(&mut irqs, IrqIndex::Msix, 0, vec![Some("a")]);
    for (start, count) in [(4, 0), (3, 2), (u32::MAX, 2), (1, u32::MAX), (0, 5)] {
        let err = irqs
            .set_irqs(request(
                IrqIndex::Msix,
                IrqAction::Trigger,
                start,
                count,
                IrqData::None,
            ))
            .unwrap_err();
        assert!(
            matches!(err, IrqError::OutOfRange { .. }),
            "{start}+{count}"
        );
        assert_eq!(err.errno(), 22);
    }
    let bad_index = request(IrqIndex::Msix, IrqAction::Trigger, 0, 1, IrqData::None);
    let bad_index = SetIrqs {
        index: 5,
        ..bad_index
    };
    assert_eq!(irqs.set_irqs(bad_index), Err(IrqError::InvalidIndex(5)));
    assert_eq!(irqs.trigger(IrqIndex::Msix, 0), Some(&"a"));
}

#[test]
fn bool_trigger_fires_the_selected_assigned_vectors() {
    let mut irqs = Interrupts::new(6);
    assign(
        &mut irqs,
        IrqIndex::Msix,
        1,
        vec![Some("1"), Some("2"), None, Some("4")],
    );
    let outcome = irqs
        .set_irqs(request(
            IrqIndex::Msix,
            IrqAction::Trigger,
            1,
            4,
            IrqData::Bool(vec![true, false, true, true]),
        ))
        .unwrap();
    // Vector 3 is selected but has no trigger.
    assert_eq!(outcome.fire, 0b1_0010);
    let none = irqs
        .set_irqs(request(
            IrqIndex::Msix,
            IrqAction::Trigger,
            0,
            6,
            IrqData::None,
        ))
        .unwrap();
    assert_eq!(none.fire, 0b1_0110);
}

#[test]
fn bool_data_must_match_count() {
    let mut irqs: Interrupts<&str> = Interrupts::new(4);
    let err = irqs
        .set_irqs(request(
            IrqIndex::Msix,
            IrqAction::Trigger,
            0,
            2,
            IrqData::Bool(vec![true]),
        ))
        .unwrap_err();
    assert_eq!(err, IrqError::BoolCount { count: 2, given: 1 });
}

#[test]
fn more_triggers_than_count_are_rejected() {
    let mut irqs = Interrupts::new(4);
    let err = irqs
        .set_irqs(request(
            IrqIndex::Msix,
            IrqAction::Trigger,
            0,
            1,
            IrqData::Triggers(vec![Some("a"), Some("b")]),
        ))
        .unwrap_err();
    assert_eq!(err, IrqError::TooManyTriggers { count: 1, given: 2 });
    assert_eq!(irqs.trigger(IrqIndex::Msix, 0), None);
}

#[test]
fn unmask_by_trigger_is_unsupported() {
    let mut irqs = Interrupts::new(1);
    let err = irqs
        .set_irqs(request(
            IrqIndex::Intx,
            IrqAction::Unmask,
            0,
            1,
            IrqData::Triggers(vec![Some("resample")]),
        ))
        .unwrap_err();
    assert_eq!(err, IrqError::MaskByTrigger);
    assert_eq!(err.errno(), ENOTSUP);
}

#[test]
fn mask_on_other_indices_is_accepted_without_effect() {
    let mut irqs = Interrupts::new(2);
    assign(&mut irqs, IrqIndex::Msix, 0, vec![Some("a"), Some("b")]);
    irqs.set_irqs(request(
        IrqIndex::Msix,
        IrqAction::Mask,
        0,
        2,
        IrqData::None,
    ))
    .unwrap();
    assert_eq!(irqs.raise(1, false), Some(&"b"));
    assert!(!irqs.intx_masked());
}

#[test]
fn reset_drops_triggers_and_unmasks_intx() {
    let mut irqs = Interrupts::new(2);
    assign(&mut irqs, IrqIndex::Intx, 0, vec![Some("intx")]);
    assign(&mut irqs, IrqIndex::Req, 0, vec![Some("req")]);
    irqs.raise(0, false);
    irqs.reset();
    assert!(!irqs.intx_masked() && !irqs.intx_asserted());
    assert_eq!(irqs.trigger(IrqIndex::Req, 0), None);
    assert_eq!(irqs.raise(0, false), None);
}
