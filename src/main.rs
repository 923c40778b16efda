//! `kvstore-node`: the node daemon. Thin: parse flags, set up logging, run the server.

use clap::Parser;
use kvstore::config::{Args, Config};

/// mimalloc instead of glibc malloc: under cluster load glibc's `_int_malloc`,
/// `malloc_consolidate` and `_int_free` took 28% of the node's CPU (per-request keys, values,
/// tasks and channels).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Args::parse();
    let mut logger = env_logger::Builder::new();
    // glommio logs a harmless ERROR when its iopoll probe fails on virtio disks: silence it
    // by default (RUST_LOG can still enable it).
    logger.parse_filters(&format!("{},glommio::reactor=off", args.log_level));
    if let Ok(filters) = std::env::var("RUST_LOG") {
        logger.parse_filters(&filters);
    }
    logger.format_timestamp_millis().init();
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvstore-node: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = kvstore::server::runtime::run(config) {
        eprintln!("kvstore-node: {e}");
        // Other cores may still be running: exit the process, not just this thread.
        std::process::exit(1);
    }
}
