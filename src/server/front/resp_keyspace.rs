//! The Redis keyspace commands that need nothing new: TYPE, OBJECT, RANDOMKEY (and UNLINK and
//! TOUCH, which the command table maps onto DEL and EXISTS).
//!
//! Owns: their arguments and their replies from a GET's value or a SCAN page. Never stores
//! anything of its own (kvstore keeps no access times or frequencies, so OBJECT IDLETIME and
//! FREQ answer Redis's error for a policy that does not track them).

/// Redis stores a string of at most this many bytes in one allocation (`embstr`).
const EMBSTR_BYTES_MAX: usize = 44;
/// The longest decimal that Redis keeps as an `int` (`-9223372036854775808`).
const INT_DIGITS_MAX: usize = 20;

/// What an OBJECT subcommand asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Encoding,
    RefCount,
}

/// The OBJECT HELP lines.
pub const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Not tracked: kvstore keeps no access frequencies.",
    "IDLETIME <key>",
    "    Not tracked: kvstore keeps no access times.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key> (always 1).",
    "HELP",
    "    Print this help.",
];

/// Redis's error for OBJECT FREQ without an LFU policy (kvstore never evicts).
pub const FREQ_NOT_TRACKED: &str = "ERR An LFU maxmemory policy is not selected, access \
    frequency not tracked. Please note that when switching between policies at runtime LRU \
    and LFU data will take some time to adjust.";
/// OBJECT IDLETIME: kvstore keeps no access times.
pub const IDLETIME_NOT_TRACKED: &str =
    "ERR kvstore keeps no access times: OBJECT IDLETIME is not tracked";

/// The encoding Redis would report for a string value: `int` for a canonical 64-bit decimal,
/// `embstr` up to 44 bytes, `raw` beyond.
pub fn string_encoding(value: &[u8]) -> &'static str {
    let canonical_int = value.len() <= INT_DIGITS_MAX
        && std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|n| n.to_string().as_bytes() == value);
    if canonical_int {
        "int"
    } else if value.len() <= EMBSTR_BYTES_MAX {
        "embstr"
    } else {
        "raw"
    }
}

/// RANDOMKEY's starting point on the hash ring: a key at or after a random position (and, when
/// none follows it, the first key from the start). Keys after long gaps are picked more often:
/// a key, not a uniform draw.
pub fn random_cursor() -> u64 {
    fastrand::u64(0..1 << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_as_redis_reports_them() {
        assert_eq!(string_encoding(b"10086"), "int");
        assert_eq!(string_encoding(b"-9223372036854775808"), "int");
        assert_eq!(string_encoding(b"9223372036854775808"), "embstr");
        assert_eq!(string_encoding(b"010"), "embstr");
        assert_eq!(string_encoding(b"+1"), "embstr");
        assert_eq!(string_encoding(b"3.14"), "embstr");
        assert_eq!(string_encoding(&[b'a'; EMBSTR_BYTES_MAX]), "embstr");
        assert_eq!(string_encoding(&[b'a'; EMBSTR_BYTES_MAX + 1]), "raw");
        assert_eq!(string_encoding(b""), "embstr");
    }

    #[test]
    fn random_cursors_stay_on_the_ring() {
        assert!((0..1000).all(|_| random_cursor() < 1 << 32));
    }
}
