//! The seeds a seeded test runs: `KV_<NAME>_SEED=<n>` replays one, `KV_<NAME>_SEEDS=<n>` runs
//! seeds 1..=n, else 1..=`default`.

pub fn seeds(name: &str, default: u64) -> Vec<u64> {
    let var = |suffix: &str| {
        std::env::var(format!("KV_{name}_{suffix}"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    match var("SEED") {
        Some(one) => vec![one],
        None => (1..=var("SEEDS").unwrap_or(default)).collect(),
    }
}
