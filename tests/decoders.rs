//! The fuzz corpus, replayed: every file under `fuzz/seeds/` and `fuzz/corpus/<target>/` (inputs
//! AFL++ found interesting), plus well-formed inputs built here, goes through its decoder
//! (`kvstore::fuzz_targets`) whole, cut at every length, and with each byte flipped. A decoder
//! must not panic and must keep its promises (a frame never claims more bytes than it got).

use std::path::Path;

use kvstore::core::version::Version;
use kvstore::fuzz_targets::TARGETS;
use kvstore::storage::record::{self, Kind};
use kvstore::wire::native::{self, Opcode, Request};

/// Inputs longer than this are cut and flipped only within their first bytes (bounded time).
const MUTATED_PREFIX_BYTES_MAX: usize = 2048;

/// Whole, every prefix, every single-byte flip (within the bound).
fn exercise(target: fn(&[u8]), input: &[u8]) {
    target(input);
    let n = input.len().min(MUTATED_PREFIX_BYTES_MAX);
    for end in 0..n {
        target(&input[..end]);
    }
    let mut flipped = input.to_vec();
    for i in 0..n {
        flipped[i] ^= 0xFF;
        target(&flipped);
        flipped[i] ^= 0xFF;
    }
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(std::path::PathBuf, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| std::fs::read(e.path()).ok().map(|b| (e.path(), b)))
        .collect();
    out.sort();
    out.into_iter().map(|(_, b)| b).collect()
}

/// Well-formed inputs, so every decoder's deep paths are reached even without a corpus.
fn built() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut frame = Vec::new();
    native::encode_request(
        &mut frame,
        &Request {
            request_id: 7,
            opcode: Opcode::Put as u8,
            version: Version { hlc: 5, writer: 9 },
            flags: native::FLAG_EXPIRES,
            key: b"key",
            value: b"value",
        },
    );
    out.push(frame);
    out.push(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\nGET k\r\n".to_vec());
    let mut wal = Vec::new();
    for (i, kind) in [Kind::Put, Kind::Tombstone, Kind::HintPut, Kind::Forget]
        .into_iter()
        .enumerate()
    {
        let cell = kvstore::core::cell::encode(b"v", Some(i as u64));
        record::encode(
            &mut wal,
            1,
            i as u64,
            kind,
            Version {
                hlc: i as u64 + 1,
                writer: 1,
            },
            b"\x02n1key",
            &cell,
        );
    }
    out.push(wal);
    out.push(
        br#"[{"id":"n1","addr":"127.0.0.1:1","status":"alive","incarnation":1,"role":"member"}]"#
            .to_vec(),
    );
    out
}

#[test]
fn the_corpus_and_its_mutations_never_break_a_decoder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = files(&root.join("seeds"));
    let built = built();
    let mut total = 0;
    for (name, target) in TARGETS {
        let corpus = files(&root.join("corpus").join(name));
        for input in seeds.iter().chain(&built).chain(&corpus) {
            exercise(*target, input);
            total += 1;
        }
        eprintln!("{name}: {} corpus inputs", corpus.len());
    }
    assert!(total >= TARGETS.len() * (seeds.len() + built.len()));
}
