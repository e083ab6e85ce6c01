//! The ids the hub gives events: its one order of events (the seq),
//! written as the current Mercure draft wants hub ids to be, a fragment
//! (`#` and the seq in decimal: `#42`). Publishers may not use ids that
//! start with `#`, so the two never collide; ids along a stream still
//! increase with the seq. The bare decimal of earlier versions (`42`) is
//! still read, so a client that was connected across an upgrade resumes.

/// The id the hub gives the event at `seq`.
pub fn hub_id(seq: u64) -> String {
    format!("#{seq}")
}

/// The seq of a hub-given id (either form), or `None` for any other id.
/// Only the canonical spelling is read (no sign, no leading zero), so that
/// one event has one id.
pub fn seq_of(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('#').unwrap_or(id);
    let seq: u64 = digits.parse().ok()?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && seq.to_string() == digits).then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_forms_are_read_and_only_canonical_ones() {
        assert_eq!(hub_id(42), "#42");
        assert_eq!(seq_of("#42"), Some(42));
        assert_eq!(seq_of("42"), Some(42));
        for other in [
            "#042",
            "+42",
            "#+42",
            "#",
            "",
            "##1",
            "#1a",
            "urn:uuid:1",
            "#-1",
        ] {
            assert_eq!(seq_of(other), None, "{other:?}");
        }
    }

    proptest! {
        #[test]
        fn every_seq_round_trips(seq in any::<u64>()) {
            prop_assert_eq!(seq_of(&hub_id(seq)), Some(seq));
        }
    }
}
