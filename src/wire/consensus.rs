//! Codecs of consensus traffic (`core::consensus`): a client's conditional command (native
//! opcode CONSENSUS) and its reply, and the replica messages PREPARE and ACCEPT with their
//! answers. Pure: bytes in, values out; anything malformed decodes to `None`.
//!
//! Layouts (little-endian): a ballot is round u64 | proposer u32; an entry is flags u8 (1: a
//! value, 2: an expiry) | hlc u64 | writer u32 | [expires_at_ms u64] | value (the rest, or
//! length-prefixed u32 inside an answer; flag 4: the value is a list, in `Data::to_bytes`'s
//! layout). Never decides anything.

use crate::core::bytes::ByteReader;
use crate::core::consensus::acceptor::Answer;
use crate::core::consensus::change::{Change, Cond, End, ExpiryCond, Reply};
use crate::core::consensus::command::{Command, Ttl};
use crate::core::consensus::{Ballot, Data, Entry};

/// Bytes a command or an entry adds to the values it carries (tags, lengths, versions).
pub const CONSENSUS_OVERHEAD_BYTES_MAX: usize = 64;

pub const BALLOT_BYTES: usize = 12;

/// The shared cursor (`core::bytes`) with this encoding's own reads.
struct Reader<'a>(ByteReader<'a>);

impl<'a> std::ops::Deref for Reader<'a> {
    type Target = ByteReader<'a>;
    fn deref(&self) -> &ByteReader<'a> {
        &self.0
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Reader<'a> {
        Reader(ByteReader::new(b))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        Some(self.0.bytes()?.to_vec())
    }
    fn ballot(&mut self) -> Option<Ballot> {
        Some(Ballot {
            round: self.u64()?,
            proposer: self.u32()?,
        })
    }
    fn entry(&mut self) -> Option<Entry> {
        let flags = self.u8()?;
        let version = self.version()?;
        let expires_at_ms = if flags & 2 != 0 {
            Some(self.u64()?)
        } else {
            None
        };
        let value = match (flags & 1 != 0, flags & 4 != 0) {
            (false, _) => None,
            (true, false) => Some(Data::Str(self.bytes()?)),
            // the elements are copied out once, not the whole list first
            (true, true) => Some(Data::list_from_bytes(self.0.bytes()?)?),
        };
        Some(Entry {
            value,
            expires_at_ms,
            version,
        })
    }
    fn end(&self) -> Option<()> {
        self.is_empty().then_some(())
    }
    fn end_byte(&mut self) -> Option<End> {
        match self.u8()? {
            0 => Some(End::Left),
            1 => Some(End::Right),
            _ => None,
        }
    }
    /// An optional count (`u64::MAX`: none).
    fn count(&mut self) -> Option<Option<usize>> {
        let n = self.u64()?;
        Some(if n == u64::MAX {
            None
        } else {
            Some(usize::try_from(n).ok()?)
        })
    }
    fn items(&mut self) -> Option<Vec<Vec<u8>>> {
        let n = self.0.count(4)?;
        (0..n).map(|_| self.bytes()).collect()
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_ballot(out: &mut Vec<u8>, b: Ballot) {
    out.extend_from_slice(&b.round.to_le_bytes());
    out.extend_from_slice(&b.proposer.to_le_bytes());
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    let list = matches!(e.value, Some(Data::List(_)));
    let flags = u8::from(e.value.is_some())
        | (u8::from(e.expires_at_ms.is_some()) << 1)
        | (u8::from(list) << 2);
    out.push(flags);
    out.extend_from_slice(&e.version.hlc.to_le_bytes());
    out.extend_from_slice(&e.version.writer.to_le_bytes());
    if let Some(at) = e.expires_at_ms {
        out.extend_from_slice(&at.to_le_bytes());
    }
    if let Some(v) = &e.value {
        put_bytes(out, &v.to_bytes());
    }
}

pub fn encode_ballot(b: Ballot) -> Vec<u8> {
    let mut out = Vec::with_capacity(BALLOT_BYTES);
    put_ballot(&mut out, b);
    out
}

pub fn decode_ballot(b: &[u8]) -> Option<Ballot> {
    let mut r = Reader::new(b);
    let ballot = r.ballot()?;
    r.end()?;
    Some(ballot)
}

/// ACCEPT's value: the ballot and the entry.
pub fn encode_accept(b: Ballot, e: &Entry) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(BALLOT_BYTES + 32 + e.value.as_ref().map_or(0, Data::len_bytes));
    put_ballot(&mut out, b);
    put_entry(&mut out, e);
    out
}

pub fn decode_accept(b: &[u8]) -> Option<(Ballot, Entry)> {
    let mut r = Reader::new(b);
    let out = (r.ballot()?, r.entry()?);
    r.end()?;
    Some(out)
}

pub fn encode_answer(a: &Answer) -> Vec<u8> {
    let mut out = Vec::new();
    match a {
        Answer::Promise {
            ballot,
            accepted,
            stored,
        } => {
            out.push(1);
            put_ballot(&mut out, *ballot);
            match accepted {
                Some((b, e)) => {
                    out.push(1);
                    put_ballot(&mut out, *b);
                    put_entry(&mut out, e);
                }
                None => out.push(0),
            }
            match stored {
                Some(e) => {
                    out.push(1);
                    put_entry(&mut out, e);
                }
                None => out.push(0),
            }
        }
        Answer::Accepted { ballot } => {
            out.push(2);
            put_ballot(&mut out, *ballot);
        }
        Answer::Nack { ballot, promised } => {
            out.push(3);
            put_ballot(&mut out, *ballot);
            put_ballot(&mut out, *promised);
        }
    }
    out
}

pub fn decode_answer(b: &[u8]) -> Option<Answer> {
    let mut r = Reader::new(b);
    let a = match r.u8()? {
        1 => {
            let ballot = r.ballot()?;
            let accepted = match r.u8()? {
                0 => None,
                1 => Some((r.ballot()?, r.entry()?)),
                _ => return None,
            };
            let stored = match r.u8()? {
                0 => None,
                1 => Some(r.entry()?),
                _ => return None,
            };
            Answer::Promise {
                ballot,
                accepted,
                stored,
            }
        }
        2 => Answer::Accepted {
            ballot: r.ballot()?,
        },
        3 => Answer::Nack {
            ballot: r.ballot()?,
            promised: r.ballot()?,
        },
        _ => return None,
    };
    r.end()?;
    Some(a)
}

fn put_cond(out: &mut Vec<u8>, c: &Cond) {
    match c {
        Cond::Always => out.push(0),
        Cond::Nx => out.push(1),
        Cond::Xx => out.push(2),
        Cond::IfEq(v) => {
            out.push(3);
            put_bytes(out, v);
        }
        Cond::IfNe(v) => {
            out.push(4);
            put_bytes(out, v);
        }
    }
}

fn take_cond(r: &mut Reader<'_>) -> Option<Cond> {
    Some(match r.u8()? {
        0 => Cond::Always,
        1 => Cond::Nx,
        2 => Cond::Xx,
        3 => Cond::IfEq(r.bytes()?),
        4 => Cond::IfNe(r.bytes()?),
        _ => return None,
    })
}

/// CONSENSUS's value: a client's command.
pub fn encode_command(c: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(c.max_bytes as u64).to_le_bytes());
    match c.ttl {
        Ttl::Clear => out.push(0),
        Ttl::Keep => out.push(1),
        Ttl::At(at) => {
            out.push(2);
            out.extend_from_slice(&at.to_le_bytes());
        }
    }
    match &c.change {
        Change::Get => out.push(0),
        Change::Set { value, cond, get } => {
            out.push(1);
            out.push(u8::from(*get));
            put_cond(&mut out, cond);
            put_bytes(&mut out, value);
        }
        Change::Incr(by) => {
            out.push(2);
            out.extend_from_slice(&by.to_le_bytes());
        }
        Change::IncrFloat(by) => {
            out.push(3);
            put_bytes(&mut out, by);
        }
        Change::Append(tail) => {
            out.push(4);
            put_bytes(&mut out, tail);
        }
        Change::SetRange { offset, bytes } => {
            out.push(5);
            out.extend_from_slice(&(*offset as u64).to_le_bytes());
            put_bytes(&mut out, bytes);
        }
        Change::Del(cond) => {
            out.push(6);
            put_cond(&mut out, cond);
        }
        Change::GetDel => out.push(7),
        Change::Push {
            end,
            items,
            only_existing,
        } => {
            out.extend([8, end_byte(*end), u8::from(*only_existing)]);
            put_items(&mut out, items);
        }
        Change::Pop { end, count } => {
            out.extend([9, end_byte(*end)]);
            out.extend_from_slice(&count.map_or(u64::MAX, |c| c as u64).to_le_bytes());
        }
        Change::Range { start, stop } | Change::Trim { start, stop } => {
            out.push(if matches!(c.change, Change::Range { .. }) {
                10
            } else {
                14
            });
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&stop.to_le_bytes());
        }
        Change::Len => out.push(11),
        Change::Index(i) => {
            out.push(12);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Change::SetIndex { index, item } => {
            out.push(13);
            out.extend_from_slice(&index.to_le_bytes());
            put_bytes(&mut out, item);
        }
        Change::Remove { count, item } => {
            out.push(15);
            out.extend_from_slice(&count.to_le_bytes());
            put_bytes(&mut out, item);
        }
        Change::Insert {
            before,
            pivot,
            item,
        } => {
            out.extend([16, u8::from(*before)]);
            put_bytes(&mut out, pivot);
            put_bytes(&mut out, item);
        }
        Change::Pos {
            item,
            rank,
            count,
            maxlen,
        } => {
            out.push(17);
            put_bytes(&mut out, item);
            out.extend_from_slice(&rank.to_le_bytes());
            out.extend_from_slice(&count.map_or(u64::MAX, |c| c as u64).to_le_bytes());
            out.extend_from_slice(&(*maxlen as u64).to_le_bytes());
        }
        Change::Move { from, to } => out.extend([18, end_byte(*from), end_byte(*to)]),
        Change::Expiry { at, cond, get } => {
            let cond = ExpiryCond::ALL.iter().position(|c| c == cond).unwrap_or(0) as u8;
            out.extend([19, cond, u8::from(*get), u8::from(at.is_some())]);
            out.extend_from_slice(&at.unwrap_or(0).to_le_bytes());
        }
    }
    out
}

fn end_byte(e: End) -> u8 {
    match e {
        End::Left => 0,
        End::Right => 1,
    }
}

fn put_items(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for i in items {
        put_bytes(out, i);
    }
}

pub fn decode_command(b: &[u8]) -> Option<Command> {
    let mut r = Reader::new(b);
    let max_bytes = usize::try_from(r.u64()?).ok()?;
    let ttl = match r.u8()? {
        0 => Ttl::Clear,
        1 => Ttl::Keep,
        2 => Ttl::At(r.u64()?),
        _ => return None,
    };
    let change = match r.u8()? {
        0 => Change::Get,
        1 => {
            let get = r.u8()? != 0;
            let cond = take_cond(&mut r)?;
            Change::Set {
                value: r.bytes()?,
                cond,
                get,
            }
        }
        2 => Change::Incr(i64::from_le_bytes(r.take(8)?.try_into().ok()?)),
        3 => Change::IncrFloat(r.bytes()?),
        4 => Change::Append(r.bytes()?),
        5 => Change::SetRange {
            offset: usize::try_from(r.u64()?).ok()?,
            bytes: r.bytes()?,
        },
        6 => Change::Del(take_cond(&mut r)?),
        7 => Change::GetDel,
        8 => Change::Push {
            end: r.end_byte()?,
            only_existing: r.u8()? != 0,
            items: r.items()?,
        },
        9 => Change::Pop {
            end: r.end_byte()?,
            count: r.count()?,
        },
        10 => Change::Range {
            start: r.i64()?,
            stop: r.i64()?,
        },
        11 => Change::Len,
        12 => Change::Index(r.i64()?),
        13 => Change::SetIndex {
            index: r.i64()?,
            item: r.bytes()?,
        },
        14 => Change::Trim {
            start: r.i64()?,
            stop: r.i64()?,
        },
        15 => Change::Remove {
            count: r.i64()?,
            item: r.bytes()?,
        },
        16 => Change::Insert {
            before: r.u8()? != 0,
            pivot: r.bytes()?,
            item: r.bytes()?,
        },
        17 => Change::Pos {
            item: r.bytes()?,
            rank: r.i64()?,
            count: r.count()?,
            maxlen: usize::try_from(r.u64()?).ok()?,
        },
        18 => Change::Move {
            from: r.end_byte()?,
            to: r.end_byte()?,
        },
        19 => {
            let cond = *ExpiryCond::ALL.get(usize::from(r.u8()?))?;
            let get = r.u8()? != 0;
            let has_at = r.u8()? != 0;
            let at = r.u64()?;
            Change::Expiry {
                at: has_at.then_some(at),
                cond,
                get,
            }
        }
        _ => return None,
    };
    r.end()?;
    Some(Command {
        change,
        ttl,
        max_bytes,
    })
}

/// CONSENSUS's answer: the command's reply.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    match reply {
        Reply::Value(None) => out.push(0),
        Reply::Value(Some(v)) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        Reply::Int(n) => {
            out.push(2);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Reply::Text(t) => {
            out.push(3);
            out.extend_from_slice(t);
        }
        Reply::Done(d) => out.push(4 + u8::from(*d)),
        Reply::Error(e) => {
            out.push(6);
            out.extend_from_slice(e.as_bytes());
        }
        Reply::Array(None) => out.push(7),
        Reply::Array(Some(items)) => {
            out.push(8);
            put_items(&mut out, items);
        }
        Reply::Ints(ns) => {
            out.push(9);
            for n in ns {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
    out
}

/// A reply as the front shows it; an error's text is owned (it came over the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Reply(Reply),
    Error(String),
}

pub fn decode_reply(b: &[u8]) -> Option<Decoded> {
    let (&tag, rest) = b.split_first()?;
    Some(Decoded::Reply(match tag {
        0 if rest.is_empty() => Reply::Value(None),
        1 => Reply::Value(Some(rest.to_vec())),
        2 => Reply::Int(i64::from_le_bytes(rest.try_into().ok()?)),
        3 => Reply::Text(rest.to_vec()),
        4 | 5 if rest.is_empty() => Reply::Done(tag == 5),
        6 => return Some(Decoded::Error(String::from_utf8_lossy(rest).into_owned())),
        7 if rest.is_empty() => Reply::Array(None),
        8 => {
            let mut r = Reader::new(rest);
            let items = r.items()?;
            r.end()?;
            Reply::Array(Some(items))
        }
        9 if rest.len() % 8 == 0 => Reply::Ints(
            rest.chunks(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version::Version;

    fn entries() -> Vec<Entry> {
        let version = Version { hlc: 77, writer: 3 };
        vec![
            Entry::ABSENT,
            Entry {
                value: Some(Data::Str(b"v".to_vec())),
                expires_at_ms: Some(9),
                version,
            },
            Entry {
                value: Some(Data::Str(Vec::new())),
                expires_at_ms: None,
                version,
            },
            Entry {
                value: Some(Data::List(vec![b"a".to_vec(), Vec::new()].into())),
                expires_at_ms: Some(5),
                version,
            },
        ]
    }

    #[test]
    fn everything_round_trips_and_garbage_is_refused() {
        let b = Ballot {
            round: 5,
            proposer: 9,
        };
        assert_eq!(decode_ballot(&encode_ballot(b)), Some(b));
        assert_eq!(decode_ballot(&[0; 11]), None);
        for e in entries() {
            assert_eq!(decode_accept(&encode_accept(b, &e)), Some((b, e.clone())));
            let answers = [
                Answer::Promise {
                    ballot: b,
                    accepted: Some((b, e.clone())),
                    stored: Some(e.clone()),
                },
                Answer::Promise {
                    ballot: b,
                    accepted: None,
                    stored: None,
                },
                Answer::Accepted { ballot: b },
                Answer::Nack {
                    ballot: b,
                    promised: b,
                },
            ];
            for a in answers {
                let bytes = encode_answer(&a);
                assert_eq!(decode_answer(&bytes), Some(a));
                assert_eq!(decode_answer(&bytes[..bytes.len() - 1]), None);
            }
        }
        let changes = [
            Change::Get,
            Change::Set {
                value: b"x".to_vec(),
                cond: Cond::IfEq(b"y".to_vec()),
                get: true,
            },
            Change::Set {
                value: b"x".to_vec(),
                cond: Cond::Nx,
                get: false,
            },
            Change::Incr(-3),
            Change::IncrFloat(b"1.5".to_vec()),
            Change::Append(b"t".to_vec()),
            Change::SetRange {
                offset: 4,
                bytes: b"ab".to_vec(),
            },
            Change::Del(Cond::IfNe(b"z".to_vec())),
            Change::GetDel,
            Change::Push {
                end: End::Left,
                items: vec![b"a".to_vec(), b"bc".to_vec()],
                only_existing: true,
            },
            Change::Pop {
                end: End::Right,
                count: Some(3),
            },
            Change::Pop {
                end: End::Left,
                count: None,
            },
            Change::Range { start: -3, stop: 7 },
            Change::Trim { start: 1, stop: -1 },
            Change::Len,
            Change::Index(-1),
            Change::SetIndex {
                index: 2,
                item: b"x".to_vec(),
            },
            Change::Remove {
                count: -2,
                item: b"y".to_vec(),
            },
            Change::Insert {
                before: false,
                pivot: b"p".to_vec(),
                item: b"i".to_vec(),
            },
            Change::Pos {
                item: b"q".to_vec(),
                rank: -1,
                count: Some(0),
                maxlen: 10,
            },
            Change::Move {
                from: End::Right,
                to: End::Left,
            },
            Change::Expiry {
                at: Some(1_700_000_000_123),
                cond: ExpiryCond::Gt,
                get: false,
            },
            Change::Expiry {
                at: None,
                cond: ExpiryCond::Xx,
                get: true,
            },
        ];
        let every_cond = ExpiryCond::ALL.iter().map(|&cond| Change::Expiry {
            at: Some(5),
            cond,
            get: false,
        });
        for (i, change) in changes.into_iter().chain(every_cond).enumerate() {
            let ttl = [Ttl::Clear, Ttl::Keep, Ttl::At(1234)][i % 3];
            let c = Command {
                ttl,
                ..Command::of(change).limited(77)
            };
            let bytes = encode_command(&c);
            assert_eq!(decode_command(&bytes), Some(c));
            assert_eq!(decode_command(&bytes[..bytes.len() - 1]), None);
        }
        for r in [
            Reply::Value(None),
            Reply::Value(Some(b"a".to_vec())),
            Reply::Int(-7),
            Reply::Text(b"1.5".to_vec()),
            Reply::Done(true),
            Reply::Done(false),
            Reply::Array(None),
            Reply::Array(Some(vec![b"x".to_vec(), Vec::new()])),
            Reply::Ints(vec![3, -1]),
        ] {
            assert_eq!(decode_reply(&encode_reply(&r)), Some(Decoded::Reply(r)));
        }
        assert_eq!(
            decode_reply(&encode_reply(&Reply::Error("ERR x"))),
            Some(Decoded::Error("ERR x".into()))
        );
        assert_eq!(decode_reply(&[42]), None);
        assert_eq!(decode_reply(&[9, 1, 2]), None, "a cut integer");
        assert_eq!(decode_reply(&[]), None);
    }
}
