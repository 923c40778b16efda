//! `kvstore-node`: the node daemon. Thin: parse flags, set up logging, run the server.

use clap::Parser;
use kvstore::config::{Args, Config};

/// mimalloc instead of glibc malloc: under cluster load glibc's `_int_malloc`,
/// `malloc_consolidate` and `_int_free` took 28% of the node's CPU (per-request keys, values,
/// tasks and channels).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The core a log line comes from: executor threads are named `kv-core-<i>`.
fn core_of_thread() -> String {
    std::thread::current()
        .name()
        .and_then(|n| n.strip_prefix("kv-core-"))
        .map(|rest| rest.split('-').next().unwrap_or(rest).to_string())
        .unwrap_or_else(|| "-".into())
}

/// Log lines carry the node id and core as `key=value` fields, e.g.
/// `2026-11-24T20:05:34.279Z INFO node=node4 core=0 kvstore::server::cluster::gossip: member node1 ...`.
fn init_logging(args: &Args, node_id: &str) {
    use std::io::Write;
    let mut logger = env_logger::Builder::new();
    // glommio logs a harmless ERROR when its iopoll probe fails on virtio disks: silence it
    // by default (RUST_LOG can still enable it).
    logger.parse_filters(&format!("{},glommio::reactor=off", args.log_level));
    if let Ok(filters) = std::env::var("RUST_LOG") {
        logger.parse_filters(&filters);
    }
    let node = node_id.to_string();
    logger
        .format(move |buf, record| {
            writeln!(
                buf,
                "{} {} node={} core={} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                node,
                core_of_thread(),
                record.target(),
                record.args()
            )
        })
        .init();
}

fn main() {
    let args = Args::parse();
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvstore-node: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&args, &config.node_id);
    if let Err(e) = kvstore::server::runtime::run(config) {
        eprintln!("kvstore-node: {e}");
        // Other cores may still be running: exit the process, not just this thread.
        std::process::exit(1);
    }
}
