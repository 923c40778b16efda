//! Expiry through the Redis protocol on a three-node cluster: honoured by reads through every
//! node and by each replica's own store, after a restart, after a replica was down while the
//! key expired (never bringing the older value back), hidden from SCAN, EXPIRE under a
//! concurrent SET (one version wins; replicas agree), and EXPIRE racing INCR and LPOP (no count
//! or element given twice).

mod common;

use std::time::{Duration, Instant};

use common::resp::Resp;
use common::*;

const EXPIRY_DEADLINE: Duration = Duration::from_secs(30);

/// What every node answers to GET `key`.
fn everywhere(nodes: &[Node], key: &str) -> Result<Vec<Option<String>>, String> {
    nodes
        .iter()
        .map(|n| Resp::connect(n.port)?.text(&["GET", key]))
        .collect()
}

#[test]
fn expiry_is_honoured_everywhere_and_survives_a_restart() -> TestResult {
    let mut nodes = cluster("expiry", 3, &[])?;
    let mut r = Resp::connect(nodes[0].port)?;
    let ok = Some("OK".to_string());
    assert_eq!(r.text(&["SET", "old", "before"])?, ok);
    // short-lived keys, each set a different way
    assert_eq!(r.text(&["SET", "old", "after", "PX", "1500"])?, ok);
    assert_eq!(r.text(&["SET", "ex", "v", "EX", "1"])?, ok);
    assert_eq!(r.text(&["PSETEX", "psetex", "1200", "v"])?, ok);
    assert_eq!(r.text(&["SET", "expire", "v"])?, ok);
    assert_eq!(r.int(&["EXPIRE", "expire", "1"])?, 1);
    assert_eq!(r.int(&["EXPIRE", "missing", "1"])?, 0);
    // long-lived ones
    assert_eq!(r.text(&["SETEX", "long", "1000", "v"])?, ok);
    let ttl = r.int(&["TTL", "long"])?;
    assert!((900..=1000).contains(&ttl), "TTL {ttl}");
    assert!(r.int(&["PTTL", "long"])? > 900_000);
    assert!(r.int(&["EXPIRETIME", "long"])? > 1_700_000_000);
    assert_eq!(r.int(&["TTL", "missing"])?, -2);
    assert_eq!(r.text(&["SET", "kept", "v", "EX", "1000"])?, ok);
    assert_eq!(r.int(&["PERSIST", "kept"])?, 1);
    assert_eq!(r.int(&["PERSIST", "kept"])?, 0, "nothing left to persist");
    assert_eq!(r.int(&["TTL", "kept"])?, -1);
    assert_eq!(r.text(&["SET", "plain", "v"])?, ok);
    assert_eq!(r.text(&["GETEX", "plain", "EX", "500"])?, Some("v".into()));
    assert!(r.int(&["TTL", "plain"])? > 400);
    assert_eq!(r.text(&["SET", "plain", "w", "KEEPTTL"])?, ok);
    assert!(r.int(&["TTL", "plain"])? > 400, "KEEPTTL kept it");
    assert_eq!(r.text(&["SET", "plain", "x"])?, ok);
    assert_eq!(r.int(&["TTL", "plain"])?, -1, "a SET clears the expiry");
    assert_eq!(r.text(&["SET", "gone", "v"])?, ok);
    assert_eq!(r.text(&["GETDEL", "gone"])?, Some("v".into()));
    assert_eq!(r.text(&["GETDEL", "gone"])?, None);
    // conditions, on a string and a list (consensus) and on a hash (its own path), through
    // another node than the one that wrote them
    let mut r2 = Resp::connect(nodes[1].port)?;
    assert_eq!(r.int(&["RPUSH", "q", "a"])?, 1);
    assert_eq!(r.int(&["HSET", "h", "f", "v"])?, 1);
    for key in ["plain", "q", "h"] {
        assert_eq!(
            r2.int(&["EXPIRE", key, "1000", "GT"])?,
            0,
            "{key}: none is forever"
        );
        assert_eq!(
            r2.int(&["EXPIRE", key, "1000", "XX"])?,
            0,
            "{key}: has none"
        );
        assert_eq!(r2.int(&["EXPIRE", key, "1000", "NX"])?, 1, "{key}");
        assert_eq!(r2.int(&["EXPIRE", key, "2000", "NX"])?, 0, "{key}: has one");
        assert_eq!(r2.int(&["EXPIRE", key, "2000", "LT"])?, 0, "{key}: later");
        assert_eq!(r2.int(&["EXPIRE", key, "900", "XX", "LT"])?, 1, "{key}");
        let ttl = r.int(&["TTL", key])?;
        assert!((800..=900).contains(&ttl), "{key}: TTL {ttl}");
        assert_eq!(r2.int(&["PERSIST", key])?, 1, "{key}");
        assert_eq!(r.int(&["TTL", key])?, -1, "{key}");
    }
    assert_eq!(r2.int(&["EXPIRE", "nothing", "10", "NX"])?, 0);

    let short = ["old", "ex", "psetex", "expire"];
    poll(
        "the short-lived keys to expire everywhere",
        EXPIRY_DEADLINE,
        || {
            short
                .iter()
                .all(|k| matches!(everywhere(&nodes, k).as_deref(), Ok([None, None, None])))
                .then_some(())
        },
    )?;
    for k in short {
        for n in &nodes {
            assert_eq!(local(n, k), None, "{k} on {}'s own store", n.id);
        }
        assert_eq!(r.int(&["EXISTS", k])?, 0);
        assert_eq!(r.int(&["TTL", k])?, -2);
        assert_eq!(
            r.int(&["DEL", k])?,
            0,
            "an expired key is not deleted again"
        );
    }
    let (keys, _) = r.scan_all(&["COUNT", "100"])?;
    let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["h", "kept", "long", "plain", "q"],
        "SCAN hides expired keys"
    );
    for k in ["kept", "long", "plain"] {
        assert!(everywhere(&nodes, k)?.iter().all(Option::is_some), "{k}");
    }

    // a restart replays the expiries: still gone, still set
    nodes[1].terminate()?;
    nodes[1].spawn()?;
    wait_members(&nodes[1], 3, "ALIVE")?;
    let mut r2 = Resp::connect(nodes[1].port)?;
    for k in short {
        assert_eq!(r2.text(&["GET", k])?, None, "{k} after restart");
        assert_eq!(local(&nodes[1], k), None, "{k} on the restarted store");
    }
    assert!(r2.int(&["TTL", "long"])? > 900);
    assert_eq!(r2.int(&["TTL", "kept"])?, -1);
    Ok(())
}

#[test]
fn a_replica_down_while_its_key_expires_never_brings_the_older_value_back() -> TestResult {
    let mut nodes = cluster("expiry-down", 3, &[])?;
    let mut r = Resp::connect(nodes[0].port)?;
    for i in 0..20 {
        r.text(&["SET", &format!("k{i}"), "older"])?;
    }
    nodes[2].kill9();
    for i in 0..20 {
        let set = r.text(&["SET", &format!("k{i}"), "newer", "PX", "1000"])?;
        assert_eq!(set.as_deref(), Some("OK"));
    }
    poll("the keys to expire", EXPIRY_DEADLINE, || {
        (0..20)
            .all(|i| matches!(r.text(&["GET", &format!("k{i}")]), Ok(None)))
            .then_some(())
    })?;
    // node3 comes back holding "older" for every key; hints and anti-entropy bring it the
    // expired version, and no read anywhere may see "older" meanwhile
    nodes[2].spawn()?;
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let mut behind = 0;
        for i in 0..20 {
            let key = format!("k{i}");
            for (n, got) in everywhere(&nodes, &key)?.iter().enumerate() {
                assert_eq!(got, &None, "{key} through node{} came back", n + 1);
            }
            let own = nodes[2].kv(&["get", "--local", &key]);
            match own.status.code() {
                Some(0) => behind += 1,
                Some(1) => {}
                _ => return Err(format!("node3 did not answer: {own:?}").into()),
            }
        }
        if behind == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node3 still holds {behind} older values"
        );
        nodes[0].kv(&["repair"]);
    }
    Ok(())
}

#[test]
fn expire_racing_a_set_ends_with_one_version_on_every_replica() -> TestResult {
    let nodes = cluster("expiry-race", 3, &[])?;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let writer = std::thread::spawn(move || -> Result<u32, String> {
        let mut w = Resp::connect(ports[1])?;
        let mut n = 0;
        for i in 0..200 {
            w.text(&["SET", "hot", &format!("v{i}")])?;
            n += 1;
        }
        Ok(n)
    });
    let mut e = Resp::connect(nodes[2].port)?;
    let mut expires = 0;
    while !writer.is_finished() {
        expires += e.int(&["EXPIRE", "hot", "1000"])?;
    }
    let written = writer.join().map_err(|_| "writer panicked")??;
    assert_eq!(written, 200);
    // Whatever won, it is one write: a value some SET wrote, and every node reads it.
    let reads = everywhere(&nodes, "hot")?;
    let value = reads[0].clone().ok_or("hot is missing")?;
    assert!(value.starts_with('v'), "{value}");
    assert!(
        reads.iter().all(|r| r.as_deref() == Some(&value)),
        "{reads:?}"
    );
    let ttl = e.int(&["TTL", "hot"])?;
    assert!(ttl == -1 || (0..=1000).contains(&ttl), "TTL {ttl}");
    nodes[0].kv(&["repair"]);
    poll(
        "every replica to hold the same value",
        EXPIRY_DEADLINE,
        || {
            nodes
                .iter()
                .all(|n| local(n, "hot").as_deref() == Some(&value))
                .then_some(())
        },
    )?;
    eprintln!("200 SETs raced {expires} EXPIREs; {value} with TTL {ttl} won everywhere");
    Ok(())
}

/// EXPIRE runs as a consensus command on strings and lists, so it never writes back a value it
/// read before a concurrent INCR or LPOP took effect: no count is given twice, no element is
/// popped twice. (Done as a read and a write of the value, an EXPIRE between the two could
/// bring back the count before an INCR, or the element a pop had taken.)
#[test]
fn expire_racing_incr_and_pops_repeats_no_count_and_no_element() -> TestResult {
    const EACH: usize = 60;
    let nodes = cluster("expiry-rmw", 3, &[])?;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let mut setup = Resp::connect(ports[0])?;
    let jobs: Vec<String> = (0..2 * EACH).map(|i| format!("j{i}")).collect();
    let mut push = vec!["RPUSH", "jobs"];
    push.extend(jobs.iter().map(String::as_str));
    assert_eq!(setup.int(&push)?, jobs.len() as i64);
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let port = ports[w];
            std::thread::spawn(move || -> Result<(Vec<i64>, Vec<String>), String> {
                let mut c = Resp::connect(port)?;
                let mut counts = Vec::new();
                let mut popped = Vec::new();
                for _ in 0..EACH {
                    counts.push(c.int(&["INCR", "hits"])?);
                    if let Some(job) = c.text(&["LPOP", "jobs"])? {
                        popped.push(job);
                    }
                }
                Ok((counts, popped))
            })
        })
        .collect();
    let mut e = Resp::connect(ports[2])?;
    let mut expires = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        expires += e.int(&["EXPIRE", "hits", "1000"])?;
        expires += e.int(&["EXPIRE", "jobs", "1000"])?;
    }
    let mut counts = Vec::new();
    let mut popped = Vec::new();
    for w in workers {
        let (c, p) = w.join().map_err(|_| "a worker panicked")??;
        counts.extend(c);
        popped.extend(p);
    }
    counts.sort_unstable();
    let want: Vec<i64> = (1..=2 * EACH as i64).collect();
    assert_eq!(counts, want, "every INCR got its own count");
    popped.sort();
    let mut all = jobs.clone();
    all.sort();
    assert_eq!(popped, all, "every element popped exactly once");
    let mut r = Resp::connect(ports[1])?;
    assert_eq!(r.text(&["GET", "hits"])?, Some((2 * EACH).to_string()));
    eprintln!("{} INCRs and pops raced {expires} EXPIREs", 2 * EACH);
    Ok(())
}
