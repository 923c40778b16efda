//! The Redis string family's read commands that need nothing new: STRLEN, GETRANGE and its
//! old name SUBSTR (GET, SET, MGET, MSET and the expiry forms are planned in `resp_front` and
//! `resp_expiry`).
//!
//! Owns: their arguments and their replies from the value a GET read. Never writes: a string
//! command whose reply depends on what is stored and that changes it (APPEND, SETRANGE, INCR)
//! is a consensus round (`resp_conditional`).

/// GETRANGE's offsets, as Redis reads them (negative: from the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: i64,
    pub end: i64,
}

fn int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// `GETRANGE key start end`: the offsets, or Redis's error.
pub fn range(start: &[u8], end: &[u8]) -> Result<Range, &'static str> {
    match (int(start), int(end)) {
        (Some(start), Some(end)) => Ok(Range { start, end }),
        _ => Err("ERR value is not an integer or out of range"),
    }
}

/// The bytes of `value` that GETRANGE answers (Redis's rules: negative offsets count from the
/// end, both ends inclusive and clamped to the string; empty when start passes end).
pub fn substring(value: &[u8], r: Range) -> &[u8] {
    let len = value.len() as i64;
    if len == 0 || (r.start < 0 && r.end < 0 && r.start > r.end) {
        return &[];
    }
    let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let start = from_end(r.start);
    let end = from_end(r.end).min(len - 1);
    if start > end {
        return &[];
    }
    &value[start as usize..=end as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(v: &str, start: i64, end: i64) -> String {
        String::from_utf8(substring(v.as_bytes(), Range { start, end }).to_vec()).unwrap()
    }

    /// Redis's own examples (GETRANGE's documentation), and the edges.
    #[test]
    fn getrange_as_redis_answers() {
        let v = "This is a string";
        assert_eq!(sub(v, 0, 3), "This");
        assert_eq!(sub(v, -3, -1), "ing");
        assert_eq!(sub(v, 0, -1), v);
        assert_eq!(sub(v, 10, 100), "string");
        assert_eq!(sub(v, 15, 15), "g");
        assert_eq!(sub(v, 16, 20), "");
        assert_eq!(sub(v, 5, 3), "");
        assert_eq!(sub(v, -1, -3), "");
        assert_eq!(sub(v, -100, 2), "Thi");
        assert_eq!(sub(v, -100, -100), "T");
        assert_eq!(sub("", 0, -1), "");
        assert_eq!(sub(v, i64::MIN, i64::MAX), v);
        assert_eq!(
            range(b"1", b"x"),
            Err("ERR value is not an integer or out of range")
        );
    }
}
