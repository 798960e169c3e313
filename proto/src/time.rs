//! The one conversion from wall-clock time to the Unix milliseconds every cairn format
//! carries (`received_at_ms`, `requested_at_ms`, request timestamps, block times).
//!
//! Pure code takes the time as an argument; only edges (a node's HTTP handlers, its
//! erasure coordinator, the `cairn` client) read the clock, through [`now_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

/// `t` as Unix milliseconds: 0 for a time before 1970, `u64::MAX` past the year
/// 584,556,019 (never wraps).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The system clock now, as Unix milliseconds ([`unix_ms`]).
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn before_the_epoch_is_zero_and_far_future_saturates() {
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        if let Some(before) = UNIX_EPOCH.checked_sub(Duration::from_secs(1)) {
            assert_eq!(unix_ms(before), 0);
        }
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 1_000 + 1)) {
            assert_eq!(unix_ms(far), u64::MAX);
        }
    }
}
