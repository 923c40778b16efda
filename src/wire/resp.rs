//! RESP, the Redis protocol: decoding commands, encoding RESP2 replies (and the RESP3 forms of
//! null and map, for clients that switch with `HELLO 3`).
//!
//! Owns: the RESP2 request grammar (multibulk `*<n>\r\n$<len>\r\n<bytes>\r\n...` and inline
//! commands, one line split on spaces) and the reply encoders. Never performs I/O and never
//! interprets a command (the server's `resp_front` does).
//!
//! Every length is checked against its limit *before* the bytes it announces are awaited: a
//! client cannot make the node buffer more than one legal command. Arguments borrow the read
//! buffer (no copy). Written here rather than taken from a crate: the RESP crates on crates.io
//! either tie themselves to tokio codecs or decode without a size limit, which would let a
//! `$999999999` header pin memory.

use crate::limits::{
    RESP_ARGS_MAX, RESP_COMMAND_BYTES_MAX, RESP_INLINE_BYTES_MAX, RESP_LINE_BYTES_MAX,
};

/// Argument slots reserved up front from a command's declared count (the rest as they arrive:
/// a header alone never allocates for a million arguments).
const ARGS_RESERVED_MAX: usize = 1024;

/// One decoded command: `args[0]` is its name. An empty `args` is an empty command (a blank
/// inline line or `*0`), which Redis answers with nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Command<'a> {
    pub args: Vec<&'a [u8]>,
}

/// A request that cannot be framed. Each is answered with `-ERR Protocol error: ...` and the
/// connection is closed (the stream cannot be resynchronised), as Redis does.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid multibulk length")]
    MultibulkLength,
    #[error("too many arguments in one command (at most {RESP_ARGS_MAX})")]
    TooManyArgs,
    #[error("command larger than {RESP_COMMAND_BYTES_MAX} bytes")]
    CommandTooLarge,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("invalid bulk length")]
    BulkLength,
    #[error("bulk string of {len} bytes exceeds the limit of {limit}")]
    BulkTooLarge { len: u64, limit: usize },
    #[error("bulk string not terminated by CRLF")]
    BulkTerminator,
    #[error("too big inline request (at most {RESP_INLINE_BYTES_MAX} bytes)")]
    InlineTooLong,
}

/// Find `\r\n` in `buf[from..]` within `max` bytes. `Ok(None)`: not yet; `Err`: too long.
fn line_end(buf: &[u8], from: usize, max: usize) -> Result<Option<usize>, ()> {
    let window = &buf[from..buf.len().min(from + max)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(from + i)),
        None if buf.len() - from >= max => Err(()),
        None => Ok(None),
    }
}

/// Parse a signed decimal integer (at most 19 digits).
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

/// Decode one command from the front of `buf`; bulk strings may be at most `bulk_limit` bytes.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((cmd, used)))`: one command of `used` bytes.
pub fn decode_command(
    buf: &[u8],
    bulk_limit: usize,
) -> Result<Option<(Command<'_>, usize)>, DecodeError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => decode_multibulk(buf, bulk_limit),
        Some(_) => decode_inline(buf),
    }
}

fn decode_multibulk(
    buf: &[u8],
    bulk_limit: usize,
) -> Result<Option<(Command<'_>, usize)>, DecodeError> {
    let Some(end) =
        line_end(buf, 1, RESP_LINE_BYTES_MAX).map_err(|_| DecodeError::MultibulkLength)?
    else {
        return Ok(None);
    };
    let n = parse_int(&buf[1..end]).ok_or(DecodeError::MultibulkLength)?;
    let mut pos = end + 2;
    if n <= 0 {
        return Ok(Some((Command { args: Vec::new() }, pos)));
    }
    if n as usize > RESP_ARGS_MAX {
        return Err(DecodeError::TooManyArgs);
    }
    let mut args = Vec::with_capacity((n as usize).min(ARGS_RESERVED_MAX));
    for _ in 0..n {
        let Some(&tag) = buf.get(pos) else {
            return Ok(None);
        };
        if tag != b'$' {
            return Err(DecodeError::ExpectedBulk(tag));
        }
        let Some(end) =
            line_end(buf, pos + 1, RESP_LINE_BYTES_MAX).map_err(|_| DecodeError::BulkLength)?
        else {
            return Ok(None);
        };
        let len = parse_int(&buf[pos + 1..end]).ok_or(DecodeError::BulkLength)?;
        if len < 0 {
            return Err(DecodeError::BulkLength);
        }
        if len as u64 > bulk_limit as u64 {
            return Err(DecodeError::BulkTooLarge {
                len: len as u64,
                limit: bulk_limit,
            });
        }
        let start = end + 2;
        let stop = start + len as usize;
        if stop + 2 > RESP_COMMAND_BYTES_MAX {
            return Err(DecodeError::CommandTooLarge);
        }
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(DecodeError::BulkTerminator);
        }
        args.push(&buf[start..stop]);
        pos = stop + 2;
    }
    Ok(Some((Command { args }, pos)))
}

fn decode_inline(buf: &[u8]) -> Result<Option<(Command<'_>, usize)>, DecodeError> {
    let window = &buf[..buf.len().min(RESP_INLINE_BYTES_MAX)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= RESP_INLINE_BYTES_MAX {
            return Err(DecodeError::InlineTooLong);
        }
        return Ok(None);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args: Vec<&[u8]> = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|a| !a.is_empty())
        .take(RESP_ARGS_MAX + 1)
        .collect();
    if args.len() > RESP_ARGS_MAX {
        return Err(DecodeError::TooManyArgs);
    }
    Ok(Some((Command { args }, nl + 1)))
}

/// `+text\r\n`
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-text\r\n` (the text should start with an error code such as `ERR`); CR and LF in it are
/// replaced so one error can never break the framing.
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn number(out: &mut Vec<u8>, tag: u8, n: i64) {
    out.push(tag);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `:n\r\n`
pub fn integer(out: &mut Vec<u8>, n: i64) {
    number(out, b':', n);
}

/// `$len\r\nbytes\r\n`
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    number(out, b'$', bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The null reply (a missing key): `$-1\r\n` in RESP2, `_\r\n` in RESP3.
pub fn null(out: &mut Vec<u8>, proto: u8) {
    if proto >= 3 {
        out.extend_from_slice(b"_\r\n");
    } else {
        out.extend_from_slice(b"$-1\r\n");
    }
}

/// A nil array: `*-1` in RESP2 (LPOP with a count of a missing key), null in RESP3.
pub fn null_array(out: &mut Vec<u8>, proto: u8) {
    if proto >= 3 {
        out.extend_from_slice(b"_\r\n");
    } else {
        out.extend_from_slice(b"*-1\r\n");
    }
}

/// The header of a map of `n` key/value pairs: `%n` in RESP3, an array of `2n` in RESP2.
pub fn map(out: &mut Vec<u8>, n: usize, proto: u8) {
    if proto >= 3 {
        number(out, b'%', n as i64);
    } else {
        array(out, 2 * n);
    }
}

/// A double given as its text (`inf`, `-inf` or a number): `,text` in RESP3, a bulk string
/// in RESP2.
pub fn double(out: &mut Vec<u8>, text: &[u8], proto: u8) {
    if proto >= 3 {
        out.push(b',');
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    } else {
        bulk(out, text);
    }
}

/// `*n\r\n`, the header of an array of `n` replies that follow.
pub fn array(out: &mut Vec<u8>, n: usize) {
    number(out, b'*', n as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        array(&mut out, args.len());
        for a in args {
            bulk(&mut out, a);
        }
        out
    }

    type Decoded = Option<(Vec<Vec<u8>>, usize)>;

    fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
        decode_command(buf, 1024)
            .map(|o| o.map(|(c, used)| (c.args.iter().map(|a| a.to_vec()).collect(), used)))
    }

    #[test]
    fn multibulk_round_trip_and_every_prefix_is_incomplete() {
        let buf = encode(&[b"SET", b"key", b"va\r\nlue"]);
        let (args, used) = decode(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"key".to_vec(), b"va\r\nlue".to_vec()]
        );
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]).unwrap(), None, "prefix {cut}");
        }
    }

    #[test]
    fn pipelined_commands_decode_one_at_a_time() {
        let mut buf = encode(&[b"GET", b"a"]);
        let first = buf.len();
        buf.extend(encode(&[b"GET", b"b"]));
        let (_, used) = decode(&buf).unwrap().unwrap();
        assert_eq!(used, first);
        let (args, _) = decode(&buf[used..]).unwrap().unwrap();
        assert_eq!(args[1], b"b");
    }

    #[test]
    fn inline_commands_split_on_spaces() {
        let (args, used) = decode(b"set  k v\r\nGET").unwrap().unwrap();
        assert_eq!(args, vec![b"set".to_vec(), b"k".to_vec(), b"v".to_vec()]);
        assert_eq!(used, 10);
        let (args, used) = decode(b"PING\n").unwrap().unwrap();
        assert_eq!((args.len(), used), (1, 5));
        let (args, used) = decode(b"\r\n").unwrap().unwrap();
        assert_eq!((args.len(), used), (0, 2));
        assert_eq!(decode(b"PING").unwrap(), None);
    }

    #[test]
    fn empty_and_negative_multibulk_are_empty_commands() {
        assert_eq!(decode(b"*0\r\n").unwrap(), Some((vec![], 4)));
        assert_eq!(decode(b"*-1\r\n").unwrap(), Some((vec![], 5)));
    }

    #[test]
    fn bulk_limit_at_and_past_the_boundary() {
        let at = vec![b'x'; 1024];
        let buf = encode(&[b"SET", b"k", &at]);
        assert!(decode(&buf).unwrap().is_some());
        let past = vec![b'x'; 1025];
        let buf = encode(&[b"SET", b"k", &past]);
        assert_eq!(
            decode(&buf),
            Err(DecodeError::BulkTooLarge {
                len: 1025,
                limit: 1024
            })
        );
        // Refused from the header alone, before the body arrives.
        assert_eq!(
            decode(b"*2\r\n$3\r\nSET\r\n$99999999\r\n"),
            Err(DecodeError::BulkTooLarge {
                len: 99_999_999,
                limit: 1024
            })
        );
    }

    #[test]
    fn argument_count_at_and_past_the_boundary() {
        let arg: &[u8] = b"k";
        let at = vec![arg; RESP_ARGS_MAX];
        assert!(decode(&encode(&at)).unwrap().is_some());
        let header = format!("*{}\r\n", RESP_ARGS_MAX + 1);
        assert_eq!(decode(header.as_bytes()), Err(DecodeError::TooManyArgs));
        // an inline line is bounded by its bytes first
        let inline_most = vec!["k"; RESP_INLINE_BYTES_MAX / 2 - 1].join(" ") + "\n";
        assert!(decode(inline_most.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn command_bytes_at_and_past_the_boundary() {
        // *2 $3 SET $<len> ...: the header lines, then a bulk that ends the command exactly at
        // the limit, or one byte past it (refused from its header, before its bytes arrive)
        let head = |len: usize| format!("*2\r\n$3\r\nSET\r\n${len}\r\n");
        let fixed = |len: usize| head(len).len() + 2;
        let mut len = RESP_COMMAND_BYTES_MAX - fixed(RESP_COMMAND_BYTES_MAX);
        while fixed(len) + len != RESP_COMMAND_BYTES_MAX {
            len += 1;
        }
        let (at, past) = (head(len), head(len + 1));
        let at = decode_command(at.as_bytes(), usize::MAX);
        assert_eq!(at, Ok(None), "at the limit: waits for the body");
        let past = decode_command(past.as_bytes(), usize::MAX);
        assert_eq!(past, Err(DecodeError::CommandTooLarge));
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(decode(b"*x\r\n"), Err(DecodeError::MultibulkLength));
        assert_eq!(decode(b"*\r\n"), Err(DecodeError::MultibulkLength));
        assert_eq!(
            decode(b"*1\r\n:5\r\n"),
            Err(DecodeError::ExpectedBulk(b':'))
        );
        assert_eq!(decode(b"*1\r\n$-1\r\n"), Err(DecodeError::BulkLength));
        assert_eq!(decode(b"*1\r\n$abc\r\n"), Err(DecodeError::BulkLength));
        assert_eq!(
            decode(b"*1\r\n$3\r\nabcXY"),
            Err(DecodeError::BulkTerminator)
        );
        // A header line that never ends within its limit.
        let long = format!("*{}", "1".repeat(RESP_LINE_BYTES_MAX + 1));
        assert_eq!(decode(long.as_bytes()), Err(DecodeError::MultibulkLength));
        let long = format!("*1\r\n${}", "1".repeat(RESP_LINE_BYTES_MAX + 1));
        assert_eq!(decode(long.as_bytes()), Err(DecodeError::BulkLength));
    }

    #[test]
    fn inline_line_limit_at_and_past_the_boundary() {
        let mut at = vec![b'a'; RESP_INLINE_BYTES_MAX - 1];
        at.push(b'\n');
        assert!(decode(&at).unwrap().is_some());
        let past = vec![b'a'; RESP_INLINE_BYTES_MAX];
        assert_eq!(decode(&past), Err(DecodeError::InlineTooLong));
        assert_eq!(decode(&past[..RESP_INLINE_BYTES_MAX - 1]).unwrap(), None);
    }

    #[test]
    fn errors_cannot_break_framing() {
        let mut out = Vec::new();
        error(&mut out, "ERR bad\r\nthing");
        assert_eq!(out, b"-ERR bad  thing\r\n");
    }

    proptest! {
        #[test]
        fn any_command_round_trips(args in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let buf = encode(&refs);
            let (got, used) = decode(&buf).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(got, args);
        }

        #[test]
        fn garbage_never_panics_and_never_overreads(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((_, used))) = decode(&buf) {
                prop_assert!(used <= buf.len());
            }
        }

        #[test]
        fn garbage_after_a_multibulk_header_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut buf = b"*3\r\n$3\r\nSET\r\n".to_vec();
            buf.extend(tail);
            if let Ok(Some((_, used))) = decode(&buf) {
                prop_assert!(used <= buf.len());
            }
        }
    }
}
