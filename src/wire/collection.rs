//! Codec of a client's collection write (native opcode COLLECTION; `core::crdt::command`).
//! Its reply travels as a conditional command's does (`wire::consensus::encode_reply`).
//! Pure: bytes in, values out; anything malformed decodes to `None`.
//!
//! Layout (little-endian): tag u8, then for each item a `u32` length and its bytes; a number
//! is its `i64` or `f64` bits as `u64`; ZADD is `ch u8`, count u32, then (score bits u64,
//! member) pairs.

use crate::core::bytes::ByteReader;
use crate::core::crdt::command::Command;

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_list(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for i in items {
        put(out, i);
    }
}

pub fn encode_command(c: &Command) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + c.payload_bytes());
    match c {
        Command::HSet(pairs) => {
            out.push(1);
            out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
            for (f, v) in pairs {
                put(&mut out, f);
                put(&mut out, v);
            }
        }
        Command::HDel(k) => {
            out.push(2);
            put_list(&mut out, k);
        }
        Command::HIncrBy(f, by) => {
            out.push(3);
            put(&mut out, f);
            out.extend_from_slice(&by.to_le_bytes());
        }
        Command::HIncrByFloat(f, by) => {
            out.push(4);
            put(&mut out, f);
            out.extend_from_slice(&by.to_bits().to_le_bytes());
        }
        Command::SAdd(m) => {
            out.push(5);
            put_list(&mut out, m);
        }
        Command::SRem(m) => {
            out.push(6);
            put_list(&mut out, m);
        }
        Command::ZAdd { ch, pairs } => {
            out.push(7);
            out.push(u8::from(*ch));
            out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
            for (s, m) in pairs {
                out.extend_from_slice(&s.to_bits().to_le_bytes());
                put(&mut out, m);
            }
        }
        Command::ZRem(m) => {
            out.push(8);
            put_list(&mut out, m);
        }
        Command::ZIncrBy(m, by) => {
            out.push(9);
            put(&mut out, m);
            out.extend_from_slice(&by.to_bits().to_le_bytes());
        }
    }
    out
}

/// The shared cursor (`core::bytes`) with this encoding's own reads.
struct Reader<'a>(ByteReader<'a>);

impl<'a> Reader<'a> {
    fn bytes(&mut self) -> Option<Vec<u8>> {
        Some(self.0.bytes()?.to_vec())
    }
    fn list(&mut self) -> Option<Vec<Vec<u8>>> {
        let n = self.0.count(4)?;
        (0..n).map(|_| self.bytes()).collect()
    }
}

pub fn decode_command(b: &[u8]) -> Option<Command> {
    let (&tag, rest) = b.split_first()?;
    let mut r = Reader(ByteReader::new(rest));
    let c = match tag {
        1 => {
            let n = r.0.count(8)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let f = r.bytes()?;
                pairs.push((f, r.bytes()?));
            }
            Command::HSet(pairs)
        }
        2 => Command::HDel(r.list()?),
        3 => {
            let f = r.bytes()?;
            Command::HIncrBy(f, r.0.u64()? as i64)
        }
        4 => {
            let f = r.bytes()?;
            Command::HIncrByFloat(f, f64::from_bits(r.0.u64()?))
        }
        5 => Command::SAdd(r.list()?),
        6 => Command::SRem(r.list()?),
        7 => {
            let ch = r.0.u8()? != 0;
            let n = r.0.count(12)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let s = f64::from_bits(r.0.u64()?);
                pairs.push((s, r.bytes()?));
            }
            Command::ZAdd { ch, pairs }
        }
        8 => Command::ZRem(r.list()?),
        9 => {
            let m = r.bytes()?;
            Command::ZIncrBy(m, f64::from_bits(r.0.u64()?))
        }
        _ => return None,
    };
    r.0.is_empty().then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips_and_garbage_is_refused() {
        let l = || vec![b"a".to_vec(), Vec::new(), b"ccc".to_vec()];
        for c in [
            Command::HSet(vec![(b"f".to_vec(), b"v".to_vec())]),
            Command::HDel(l()),
            Command::HIncrBy(b"f".to_vec(), -5),
            Command::HIncrByFloat(b"f".to_vec(), 1.5),
            Command::SAdd(l()),
            Command::SRem(l()),
            Command::ZAdd {
                ch: true,
                pairs: vec![(1.5, b"m".to_vec()), (f64::NEG_INFINITY, b"n".to_vec())],
            },
            Command::ZRem(l()),
            Command::ZIncrBy(b"m".to_vec(), 2.0),
        ] {
            let b = encode_command(&c);
            assert_eq!(decode_command(&b), Some(c.clone()));
            assert_eq!(decode_command(&b[..b.len() - 1]), None, "{c:?} truncated");
            let mut long = b.clone();
            long.push(0);
            assert_eq!(decode_command(&long), None, "{c:?} with a trailing byte");
        }
        assert_eq!(decode_command(&[]), None);
        assert_eq!(decode_command(&[99]), None);
        // a count larger than the bytes that follow is refused before allocating
        assert_eq!(decode_command(&[2, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
