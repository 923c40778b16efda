//! What one dot of a hash field (or a sorted-set member's score) carries, and the value a
//! field's surviving dots resolve to.
//!
//! Owns the per-field rules: a field's value is last-write-wins on its own version (the
//! surviving `Set` with the highest version); increments (HINCRBY, HINCRBYFLOAT, ZINCRBY) are
//! convergent counters: each writer keeps one increment dot per field, folding its earlier
//! ones in (`or_map::OrMap::add_beside`), and the value is the base plus every surviving
//! increment, so no acknowledged increment is lost. A `Set` observed-removes the increments it
//! saw; increments concurrent with it add to it. Never parses commands or formats replies.

use crate::core::version::Version;

use super::context::Dot;

#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// HSET, ZADD: the value, at its version.
    Set { version: Version, value: Box<[u8]> },
    /// This writer's increments of the field, summed (HINCRBY).
    Incr(i64),
    /// The same for HINCRBYFLOAT and ZINCRBY.
    IncrFloat(f64),
}

/// A field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved<'a> {
    /// A base with no increments: its bytes as set.
    Bytes(&'a [u8]),
    Int(i64),
    Float(f64),
    /// Increments on a base that is not a number (a concurrent HSET of text won): the text,
    /// and the increments are not applied.
    NotANumber(&'a [u8]),
}

/// Whether a dot is `writer`'s increment (what its next increment folds in).
pub fn own_increment(writer: u64) -> impl Fn(&Dot, &Field) -> bool {
    move |d, f| d.writer == writer && matches!(f, Field::Incr(_) | Field::IncrFloat(_))
}

/// The value of a field from its surviving dots (`None`: no dot survives).
pub fn resolve<'a>(fields: impl Iterator<Item = &'a Field> + Clone) -> Option<Resolved<'a>> {
    let base = fields
        .clone()
        .filter_map(|f| match f {
            Field::Set { version, value } => Some((*version, &value[..])),
            _ => None,
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, b)| b);
    let (mut int, mut float, mut any, mut floats) = (0i128, 0f64, false, false);
    let mut present = false;
    for f in fields {
        present = true;
        match f {
            Field::Incr(n) => (int, any) = (int + i128::from(*n), true),
            Field::IncrFloat(x) => (float, any, floats) = (float + x, true, true),
            Field::Set { .. } => {}
        }
    }
    if !present {
        return None;
    }
    if !any {
        // no increments, so a `Set` survives
        return Some(base.map_or(Resolved::Int(0), Resolved::Bytes));
    }
    // increments on a missing base start from 0
    let base = base.unwrap_or(b"0");
    let text = std::str::from_utf8(base).ok();
    Some(if floats {
        match text.and_then(|t| t.parse::<f64>().ok()) {
            Some(b) => Resolved::Float(b + float + int as f64),
            None => Resolved::NotANumber(base),
        }
    } else {
        match text.and_then(|t| t.parse::<i64>().ok()) {
            // concurrent increments that together pass i64 saturate (each was checked alone)
            Some(b) => {
                Resolved::Int((i128::from(b) + int).clamp(i64::MIN.into(), i64::MAX.into()) as i64)
            }
            None => Resolved::NotANumber(base),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crdt::or_map::OrMap;
    use crate::core::crdt::Crdt;

    fn set(hlc: u64, v: &str) -> Field {
        Field::Set {
            version: Version { hlc, writer: 1 },
            value: v.as_bytes().into(),
        }
    }

    #[test]
    fn the_newest_set_wins_and_increments_add_to_it() {
        let (mut a, mut b) = (OrMap::<Field>::default(), OrMap::<Field>::default());
        let d1 = a.put(1, b"f", set(10, "5"));
        b.merge(&d1);
        // concurrently: a sets again (newer), b increments what it saw
        let d2 = a.put(1, b"f", set(20, "100"));
        let d3 = b.add_beside(2, b"f", Field::Incr(3), own_increment(2));
        a.merge(&d3);
        b.merge(&d2);
        assert_eq!(a, b);
        assert_eq!(
            resolve(a.get(b"f").unwrap().values()),
            Some(Resolved::Int(103))
        );
        // an increment on a missing field starts from 0
        let mut c = OrMap::<Field>::default();
        c.add_beside(3, b"g", Field::Incr(-4), own_increment(3));
        assert_eq!(
            resolve(c.get(b"g").unwrap().values()),
            Some(Resolved::Int(-4))
        );
    }

    #[test]
    fn concurrent_sets_resolve_by_version_and_text_defeats_increments() {
        let (mut a, mut b) = (OrMap::<Field>::default(), OrMap::<Field>::default());
        let d1 = a.put(1, b"f", set(10, "x"));
        let d2 = b.put(2, b"f", set(11, "y"));
        a.merge(&d2);
        b.merge(&d1);
        assert_eq!(
            resolve(a.get(b"f").unwrap().values()),
            Some(Resolved::Bytes(b"y"))
        );
        let d3 = a.add_beside(1, b"f", Field::Incr(1), own_increment(1));
        b.merge(&d3);
        assert_eq!(
            resolve(b.get(b"f").unwrap().values()),
            Some(Resolved::NotANumber(b"y"))
        );
    }

    #[test]
    fn float_increments_and_saturation() {
        let mut a = OrMap::<Field>::default();
        a.put(1, b"f", set(1, "10.5"));
        a.add_beside(1, b"f", Field::IncrFloat(0.25), own_increment(1));
        assert_eq!(
            resolve(a.get(b"f").unwrap().values()),
            Some(Resolved::Float(10.75))
        );
        let mut b = OrMap::<Field>::default();
        b.put(1, b"n", set(1, &i64::MAX.to_string()));
        let mut c = b.clone();
        let d1 = b.add_beside(2, b"n", Field::Incr(1), own_increment(2));
        c.merge(&d1);
        assert_eq!(
            resolve(c.get(b"n").unwrap().values()),
            Some(Resolved::Int(i64::MAX))
        );
    }
}
