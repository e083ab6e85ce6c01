//! The ids the hub gives events: its one order of events (the seq),
//! written as the current Mercure draft wants hub ids to be, a fragment.
//! Publishers may not use ids that start with `#`, so the two never
//! collide.
//!
//! * Sequential (the default): `#` and the seq in decimal (`#42`). Ids along
//!   a stream increase with the seq. The bare decimal of earlier versions
//!   (`42`) is still read, so a client connected across an upgrade resumes.
//! * Opaque (`--event-id-key`): `#` and the seq encrypted with AES-128 under
//!   a key derived from the secret (22 characters of base64url). The hub
//!   still resumes exactly and in order, but an id tells a client nothing
//!   about how many events there were between two of them, or when: the
//!   draft asks that of hubs that carry sensitive private updates, since a
//!   `Mercure-Last-Event-ID` may name an event the client may not read.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How hub ids are written.
#[derive(Clone, Copy, Default)]
pub enum EventIds {
    /// `#42`.
    #[default]
    Sequential,
    /// The seq encrypted under this AES-128 key.
    Opaque([u8; 16]),
}

impl std::fmt::Debug for EventIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str(match self {
            EventIds::Sequential => "Sequential",
            EventIds::Opaque(_) => "Opaque",
        })
    }
}

impl EventIds {
    /// Opaque ids under a key derived from `secret` (SHA-256, first half):
    /// the same secret gives the same ids, across restarts and nodes.
    pub fn opaque(secret: &str) -> EventIds {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(secret.as_bytes());
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        EventIds::Opaque(key)
    }

    /// The id the hub gives the event at `seq`.
    pub fn name(&self, seq: u64) -> String {
        match self {
            EventIds::Sequential => format!("#{seq}"),
            EventIds::Opaque(key) => {
                // The seq, then zeros that a decrypted id must have again.
                let mut block = [0u8; 16];
                block[..8].copy_from_slice(&seq.to_be_bytes());
                let mut block = block.into();
                aes::Aes128::new(key.into()).encrypt_block(&mut block);
                format!("#{}", URL_SAFE_NO_PAD.encode(block))
            }
        }
    }

    /// The seq of an id this hub gives, or `None` for any other id. Only the
    /// canonical spelling is read (no sign, no leading zero), so that one
    /// event has one id; an opaque hub reads only opaque ids.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        match self {
            EventIds::Sequential => {
                let digits = id.strip_prefix('#').unwrap_or(id);
                let seq: u64 = digits.parse().ok()?;
                (digits.bytes().all(|b| b.is_ascii_digit()) && seq.to_string() == digits)
                    .then_some(seq)
            }
            EventIds::Opaque(key) => {
                let encoded = id.strip_prefix('#').filter(|e| e.len() == 22)?;
                let bytes: [u8; 16] = URL_SAFE_NO_PAD.decode(encoded).ok()?.try_into().ok()?;
                let mut block = bytes.into();
                aes::Aes128::new(key.into()).decrypt_block(&mut block);
                let (seq, zeros) = block.split_at(8);
                let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
                // (A forged id decrypts to noise: nonzero, with odds 2^-64.)
                (zeros.iter().all(|&b| b == 0) && self.name(seq) == id).then_some(seq)
            }
        }
    }
}

/// Whether `id` is one the hub gave (of either form): publishers' ids never
/// start with `#`.
pub fn is_hub_id(id: &str) -> bool {
    id.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sequential_ids_are_read_in_both_forms_and_only_canonical_ones() {
        let ids = EventIds::Sequential;
        assert_eq!(ids.name(42), "#42");
        assert_eq!(ids.seq_of("#42"), Some(42));
        assert_eq!(ids.seq_of("42"), Some(42));
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
            assert_eq!(ids.seq_of(other), None, "{other:?}");
        }
    }

    #[test]
    fn opaque_ids_hide_the_order_and_only_their_key_reads_them() {
        let ids = EventIds::opaque("a secret of enough length");
        let (one, two) = (ids.name(1), ids.name(2));
        assert_eq!(one.len(), 23);
        assert_ne!(one, two);
        assert_eq!(ids.seq_of(&one), Some(1));
        assert_eq!(ids.seq_of(&two), Some(2));
        // Not the sequential form, nor another key's ids, nor a forged one.
        assert_eq!(ids.seq_of("#1"), None);
        assert_eq!(ids.seq_of("1"), None);
        let other = EventIds::opaque("another secret of enough length");
        assert_eq!(other.seq_of(&one), None);
        assert_eq!(ids.seq_of("#AAAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(ids.seq_of(&format!("{one}x")), None);
        assert_eq!(format!("{ids:?}"), "Opaque");
    }

    proptest! {
        #[test]
        fn every_seq_round_trips(seq in any::<u64>()) {
            let sequential = EventIds::Sequential;
            prop_assert_eq!(sequential.seq_of(&sequential.name(seq)), Some(seq));
            let opaque = EventIds::opaque("a secret of enough length");
            prop_assert_eq!(opaque.seq_of(&opaque.name(seq)), Some(seq));
        }
    }
}
