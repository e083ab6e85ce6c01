//! Offsets and cursors of the Durable Streams protocol (PROTOCOL.md §8,
//! §10.1).
//!
//! An offset is the stream's position in bytes of its data (for a JSON
//! stream, of its messages as stored), written as two fixed-width decimal
//! numbers, `0000000000000000_0000000000000042`: comparing two as strings
//! orders them, and they hold none of the characters the protocol reserves
//! (`,&=?/`). The first number is always 0 for now (room for a generation,
//! should data ever be compacted); it is the shape of the reference
//! server's offsets, which clients and the conformance suite know (the
//! suite forks at `0000000000000000_0000000000000000`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// `-1`, or no offset: the beginning.
    Start,
    /// `now`: the tail, skipping what is there.
    Now,
    /// A position the hub handed out.
    At(u64),
}

const WIDTH: usize = 16;
const GENERATION: &str = "0000000000000000_";
/// Positions fit in 16 decimal digits (10 PB).
const MAX_POSITION: u64 = 9_999_999_999_999_999;

/// The offset of a position.
pub fn encode(position: u64) -> String {
    format!("{GENERATION}{:0WIDTH$}", position.min(MAX_POSITION))
}

/// A position from an offset the hub handed out; `None` for anything else.
pub fn decode(offset: &str) -> Option<u64> {
    let digits = offset.strip_prefix(GENERATION)?;
    if digits.len() != WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A read's start, from the `offset` query parameter (absent: the start).
pub fn parse_from(offset: Option<&str>) -> Option<From> {
    match offset {
        None | Some("-1") => Some(From::Start),
        Some("now") => Some(From::Now),
        Some(other) => decode(other).map(From::At),
    }
}

/// Cursors count 20-second intervals from 2024-10-09T00:00:00Z, as the
/// protocol's default has it.
const CURSOR_EPOCH_SECS: u64 = 1_728_432_000;
const CURSOR_INTERVAL_SECS: u64 = 20;

/// How far ahead of the current interval a client's cursor may be: each
/// answer moves one on by at most an hour, so ten years' worth is no
/// cursor this hub gave.
const CURSOR_AHEAD_MAX: u64 = 10 * 365 * 24 * 3600 / CURSOR_INTERVAL_SECS;

fn current_interval() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_sub(CURSOR_EPOCH_SECS) / CURSOR_INTERVAL_SECS
}

/// Whether a client's `cursor` can be answered with a later one (§10.1):
/// a number past any this hub could have given cannot. (What is no
/// number is taken as no cursor.)
pub fn answerable(client: &str) -> bool {
    if client.is_empty() || !client.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    client
        .parse::<u64>()
        .is_ok_and(|held| held <= current_interval() + CURSOR_AHEAD_MAX)
}

/// The cursor of a live answer: the current interval, or, when the client
/// already holds that one (or a later one), a later one by 1 s to 1 h of
/// jitter, so a CDN's cache key always moves on (§10.1).
pub fn cursor(client: Option<&str>, jitter: u64) -> String {
    let interval = current_interval();
    match client.and_then(|c| c.parse::<u64>().ok()) {
        Some(held) if held >= interval => {
            let seconds = 1 + jitter % 3600;
            let step = seconds.div_ceil(CURSOR_INTERVAL_SECS).max(1);
            held.saturating_add(step).to_string()
        }
        _ => interval.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_as_strings_in_the_order_of_positions() {
        let positions = [0u64, 1, 9, 10, 15, 16, 255, 4096, 1 << 40, MAX_POSITION];
        for pair in positions.windows(2) {
            assert!(encode(pair[0]) < encode(pair[1]), "{pair:?}");
        }
        for p in positions {
            assert_eq!(decode(&encode(p)), Some(p));
        }
    }

    #[test]
    fn only_offsets_the_hub_hands_out_are_read() {
        assert_eq!(encode(42), "0000000000000000_0000000000000042");
        for bad in [
            "",
            "0",
            "0000000000000000_000000000000000A",
            "0000000000000001_0000000000000000",
            "0000000000000000_00000000000000000",
            "0000000000000000_000000000000000",
            "0000000000000000-0000000000000000",
            "0000000000000000_+000000000000000",
            "-1",
            "now",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(parse_from(None), Some(From::Start));
        assert_eq!(parse_from(Some("-1")), Some(From::Start));
        assert_eq!(parse_from(Some("now")), Some(From::Now));
        assert_eq!(
            parse_from(Some("0000000000000000_0000000000000016")),
            Some(From::At(16))
        );
        assert_eq!(parse_from(Some("garbage")), None);
    }

    #[test]
    fn a_cursor_never_goes_back_nor_repeats_the_clients() {
        let now: u64 = cursor(None, 0).parse().unwrap();
        assert!(now > 0);
        for jitter in [0, 1, 19, 20, 3599, 3600, u64::MAX] {
            let held = now + 5;
            let next: u64 = cursor(Some(&held.to_string()), jitter).parse().unwrap();
            assert!(next > held, "{jitter}: {next} after {held}");
            assert!(next <= held + 180, "{jitter}: at most an hour on");
        }
        let old: u64 = cursor(Some("3"), 7).parse().unwrap();
        assert_eq!(old, now, "an old cursor gets the current interval");
        assert_eq!(cursor(Some("junk"), 7), now.to_string());
        assert!(answerable("junk") && answerable(&(now + 1000).to_string()));
        assert!(!answerable(&u64::MAX.to_string()));
        assert!(!answerable("99999999999999999999"), "past u64 too");
    }
}
