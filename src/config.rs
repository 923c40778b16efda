//! The node's command line (clap; every flag is also read from `KVSTORE_*`).
//!
//! Owns: parsing and validating flags, resolving addresses (off the executor: glommio's own
//! `bind` would panic on a bad name), and the node id kept in the data dir.

use crate::storage::dir_lock::DirLock;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::limits::{
    ANTI_ENTROPY_INTERVAL_MS_DEFAULT, AUTH_TIMEOUT_MS_DEFAULT, AUTH_TIMEOUT_MS_MAX,
    CONNECTIONS_MAX, CORES_MAX, HINT_WINDOW_MS_DEFAULT, IDLE_TIMEOUT_MS_DEFAULT, KEY_BYTES_MAX,
    MAX_CLOCK_OFFSET_MS_CEILING, MAX_CLOCK_OFFSET_MS_DEFAULT, NODE_ID_BYTES_MAX,
    SUSPECT_TIMEOUT_MS_DEFAULT, TOMBSTONE_GRACE_MS_DEFAULT, VALUE_BYTES_CEILING,
    VALUE_BYTES_MAX_DEFAULT, WAL_RECORD_HEADER_BYTES, WAL_SEGMENT_BYTES_MAX, WAL_SEGMENT_BYTES_MIN,
    WAL_ZERO_FILL_CHUNK_BYTES,
};
use crate::storage::wal_file::FsyncMode;

#[derive(Parser, Debug, Clone)]
#[command(name = "kvstore-node", version, about = "kvstore node daemon")]
pub struct Args {
    /// Node id ([A-Za-z0-9._-]{1,64}); default: the id stored in the data dir, else the hostname.
    #[arg(long, env = "KVSTORE_NODE_ID")]
    pub node_id: Option<String>,
    /// TCP port for every protocol.
    #[arg(long, env = "KVSTORE_PORT", default_value_t = 7001)]
    pub port: u16,
    /// Address to listen on (127.0.0.1 by default: safe unless asked otherwise).
    #[arg(long, env = "KVSTORE_LISTEN", default_value = "127.0.0.1")]
    pub listen: String,
    /// Data directory (WAL segments, node id).
    #[arg(long, env = "KVSTORE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Executors (cores) to run; default: all online cores.
    #[arg(long, env = "KVSTORE_CORES")]
    pub cores: Option<usize>,
    /// Pin executor i to CPU i (only when asked: several nodes on few CPUs would stack).
    #[arg(long, env = "KVSTORE_PIN", default_value_t = false)]
    pub pin: bool,
    /// Seed node HOST:PORT (repeatable); used by the cluster.
    #[arg(long = "seed", env = "KVSTORE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// WAL durability: none | interval (fdatasync every second) | batch (fdatasync before ack).
    #[arg(long, env = "KVSTORE_FSYNC", value_enum, default_value = "interval")]
    pub fsync: FsyncMode,
    /// What replay does on WAL corruption (not a torn tail): strict (alone: refuse to start;
    /// in a cluster: repair from the peers before answering replica reads) | skip-corrupt
    /// (start and serve every valid record).
    #[arg(
        long,
        env = "KVSTORE_WAL_RECOVERY",
        value_enum,
        default_value = "strict"
    )]
    pub wal_recovery: crate::core::wal_damage::RecoveryMode,
    /// Largest value accepted, in bytes (at most 15 MiB).
    #[arg(long, env = "KVSTORE_MAX_VALUE_BYTES", default_value_t = VALUE_BYTES_MAX_DEFAULT)]
    pub max_value_bytes: usize,
    /// Client connections allowed at once (at most 10000).
    #[arg(long, env = "KVSTORE_MAX_CONNECTIONS", default_value_t = CONNECTIONS_MAX)]
    pub max_connections: usize,
    /// Close a client connection idle this long (ms).
    #[arg(long, env = "KVSTORE_IDLE_TIMEOUT_MS", default_value_t = IDLE_TIMEOUT_MS_DEFAULT)]
    pub idle_timeout_ms: u64,
    /// Replicas per key (N).
    #[arg(long, env = "KVSTORE_REPLICATION", default_value_t = 3)]
    pub replication: usize,
    /// Replicas that must answer a read (R).
    #[arg(long, env = "KVSTORE_READ_QUORUM", default_value_t = 2)]
    pub read_quorum: usize,
    /// Replicas that must acknowledge a write (W).
    #[arg(long, env = "KVSTORE_WRITE_QUORUM", default_value_t = 2)]
    pub write_quorum: usize,
    /// HOST:PORT other nodes use to reach this one (default: --listen:--port unless that is
    /// 0.0.0.0, then the hostname).
    #[arg(long, env = "KVSTORE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Time a suspected member has to refute before it is declared dead (ms).
    #[arg(long, env = "KVSTORE_SUSPECT_TIMEOUT_MS", default_value_t = SUSPECT_TIMEOUT_MS_DEFAULT)]
    pub suspect_timeout_ms: u64,
    /// Serve Prometheus metrics at http://LISTEN:PORT/metrics (off when not given).
    #[arg(long, env = "KVSTORE_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// WAL segment size in bytes: a segment is rolled before it would grow past this, and a
    /// core compacts once its WAL passes max(2 x its live data, one segment). A multiple of
    /// 256 KiB, at least 1 MiB and one largest record.
    #[arg(long, env = "KVSTORE_WAL_SEGMENT_BYTES", default_value_t = WAL_SEGMENT_BYTES_MAX)]
    pub wal_segment_bytes: u64,
    /// Tombstones older than this are purged at compaction (ms; Cassandra's gc_grace). A
    /// replica that missed a delete must be repaired within it, or the value can come back.
    #[arg(long, env = "KVSTORE_TOMBSTONE_GRACE_MS", default_value_t = TOMBSTONE_GRACE_MS_DEFAULT)]
    pub tombstone_grace_ms: u64,
    /// Hinted handoff: a replica unreachable for longer than this (since its oldest undelivered
    /// hint) gets no new hints; what it misses is left to read repair (ms; Cassandra's
    /// max_hint_window).
    #[arg(long, env = "KVSTORE_HINT_WINDOW_MS", default_value_t = HINT_WINDOW_MS_DEFAULT)]
    pub hint_window_ms: u64,
    /// Time between anti-entropy rounds with every live member (ms).
    #[arg(long, env = "KVSTORE_ANTI_ENTROPY_INTERVAL_MS", default_value_t = ANTI_ENTROPY_INTERVAL_MS_DEFAULT)]
    pub anti_entropy_interval_ms: u64,
    /// File holding the client password (else `KVSTORE_PASSWORD`; no flag takes the password
    /// itself: `ps` would show it). Clients must AUTH; LEAVE and REPAIR need it too.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// File holding the read-only user's password (else `KVSTORE_READONLY_PASSWORD`): `AUTH
    /// reader <it>` may read (GET, SCAN, INFO) and nothing else. Needs a password too.
    #[arg(long)]
    pub readonly_password_file: Option<PathBuf>,
    /// File holding the cluster secret (else `KVSTORE_CLUSTER_SECRET`): nodes prove it to each
    /// other (HMAC challenge-response) before any replica, gossip or stream frame.
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// Protected mode: with no password and a listen address beyond loopback, serve clients
    /// from loopback only (yes), or everyone (no).
    #[arg(long, env = "KVSTORE_PROTECTED_MODE", default_value = "yes", value_parser = ["yes", "no"])]
    pub protected_mode: String,
    /// Serve the original design's protocol (which cannot authenticate) even with a password.
    #[arg(long, env = "KVSTORE_ORIGINAL_WITHOUT_AUTH", default_value_t = false)]
    pub original_protocol_without_auth: bool,
    /// TLS certificate chain (PEM) and private key: TLS is then served on the same port
    /// (a connection opening with a TLS handshake), for clients and peers.
    #[arg(long, env = "KVSTORE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "KVSTORE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that sign the peers' certificates: with it, links to peers use
    /// TLS too, verifying each peer's certificate against its advertised host.
    #[arg(long, env = "KVSTORE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// CA certificate(s) (PEM): TLS clients must present a certificate it signed (mutual TLS;
    /// `kv --tls-cert/--tls-key`, `redis-cli --cert/--key`). Peers present their node
    /// certificate, so sign those with it too.
    #[arg(long, env = "KVSTORE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve TLS connections only: a plain one is closed unanswered (clients and peers alike;
    /// needs --tls-cert, --tls-key and --tls-ca, so links to peers are TLS too).
    #[arg(long, env = "KVSTORE_TLS_ONLY", default_value_t = false)]
    pub tls_only: bool,
    /// Memory for keys and values (bytes, or with a Redis unit: 100mb, 2gb, 500k); past it,
    /// writes that would grow memory are refused (reads, deletes and overwrites that do not
    /// grow still work). 0: no limit.
    #[arg(long, env = "KVSTORE_MAX_MEMORY", default_value = "0", value_parser = parse_memory)]
    pub max_memory: u64,
    /// A connection that has not authenticated (AUTH, or a peer's proof of the cluster
    /// secret) this long (ms) after opening is closed, whatever it sends.
    #[arg(long, env = "KVSTORE_AUTH_TIMEOUT_MS", default_value_t = AUTH_TIMEOUT_MS_DEFAULT)]
    pub auth_timeout_ms: u64,
    /// A node whose clock is further than this (ms) from a majority of its peers fences
    /// itself: it coordinates and stores no writes until the clock is back within it.
    #[arg(long, env = "KVSTORE_MAX_CLOCK_OFFSET_MS", default_value_t = MAX_CLOCK_OFFSET_MS_DEFAULT)]
    pub max_clock_offset_ms: u64,
    /// Log level (error, warn, info, debug, trace); RUST_LOG wins when set.
    #[arg(long, env = "KVSTORE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Configuration errors: each names the flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--node-id {0:?}: must match [A-Za-z0-9._-]{{1,64}}")]
    BadNodeId(String),
    #[error("--listen {addr:?}: cannot resolve: {reason}")]
    BadListen { addr: String, reason: String },
    #[error("--cores {0}: must be 1..={CORES_MAX}")]
    BadCores(usize),
    #[error("--max-value-bytes {0}: must be 1..={VALUE_BYTES_CEILING}")]
    BadValueLimit(usize),
    #[error("--max-connections {0}: must be 1..={CONNECTIONS_MAX}")]
    BadConnections(usize),
    #[error("--auth-timeout-ms {0}: must be 1..={AUTH_TIMEOUT_MS_MAX}")]
    BadAuthTimeout(u64),
    #[error("--max-clock-offset-ms {0}: must be 1..={MAX_CLOCK_OFFSET_MS_CEILING}")]
    BadClockOffset(u64),
    #[error("data dir {dir} belongs to node {stored:?}, not {given:?}; refusing to start")]
    NodeIdMismatch {
        dir: PathBuf,
        stored: String,
        given: String,
    },
    #[error("{0}")]
    Replication(#[from] crate::core::quorum::ConfigError),
    #[error("--advertise {0:?}: must be HOST:PORT with a routable host (not 0.0.0.0)")]
    BadAdvertise(String),
    #[error("data dir {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Locked(#[from] crate::storage::dir_lock::LockError),
    #[error("{0}")]
    Credentials(#[from] crate::server::front::auth::Error),
    #[error("{0}")]
    Tls(#[from] crate::certs::Error),
    #[error(
        "--wal-segment-bytes {given}: must be a multiple of {WAL_ZERO_FILL_CHUNK_BYTES} between \
         {min} (one largest record at this --max-value-bytes, and {WAL_SEGMENT_BYTES_MIN}) and \
         {WAL_SEGMENT_BYTES_MAX}"
    )]
    BadSegmentSize { given: u64, min: u64 },
    #[error(
        "a read-only password (--readonly-password-file or KVSTORE_READONLY_PASSWORD) needs a \
         password for the full user too (--password-file or KVSTORE_PASSWORD)"
    )]
    ReaderWithoutPassword,
    #[error(
        "--tls-only needs --tls-cert and --tls-key (what to serve) and --tls-ca (so links to \
         peers are TLS too)"
    )]
    TlsOnlyWithoutTls,
}

/// Validated settings the runtime starts from.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub pin: bool,
    pub seeds: Vec<String>,
    pub fsync: FsyncMode,
    pub wal_recovery: crate::core::wal_damage::RecoveryMode,
    pub max_value_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout_ms: u64,
    pub replication: crate::core::quorum::Replication,
    pub advertise: String,
    pub suspect_timeout_ms: u64,
    /// Where `/metrics` is served (same host as `listen`).
    pub metrics: Option<SocketAddr>,
    pub wal_segment_bytes: u64,
    pub tombstone_grace_ms: u64,
    pub max_memory: Option<u64>,
    pub max_clock_offset_ms: u64,
    pub auth_timeout_ms: u64,
    pub hint_window_ms: u64,
    pub anti_entropy_interval_ms: u64,
    pub creds: std::sync::Arc<crate::server::front::auth::Credentials>,
    pub tls: Option<crate::server::front::tls::Tls>,
    /// The data-dir lock, held as long as the settings (the node's life).
    pub dir_lock: std::sync::Arc<crate::storage::dir_lock::DirLock>,
}

pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= NODE_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

const NODE_ID_FILE: &str = "NODE_ID";

impl Config {
    pub fn from_args(args: &Args) -> Result<Config, Error> {
        let cores = args.cores.unwrap_or_else(online_cores);
        if cores == 0 || cores > CORES_MAX {
            return Err(Error::BadCores(cores));
        }
        if args.max_value_bytes == 0 || args.max_value_bytes > VALUE_BYTES_CEILING {
            return Err(Error::BadValueLimit(args.max_value_bytes));
        }
        if args.max_connections == 0 || args.max_connections > CONNECTIONS_MAX {
            return Err(Error::BadConnections(args.max_connections));
        }
        let replication = crate::core::quorum::Replication::new(
            args.replication,
            args.read_quorum,
            args.write_quorum,
        )?;
        let listen = resolve(&args.listen, args.port)?;
        let advertise = match &args.advertise {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => format!("{}:{}", hostname(), args.port),
            None => listen.to_string(),
        };
        let routable = advertise.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && h != "0.0.0.0" && h != "[::]" && p.parse::<u16>().is_ok()
        });
        if !routable {
            return Err(Error::BadAdvertise(advertise));
        }
        let min_segment = ((WAL_RECORD_HEADER_BYTES + KEY_BYTES_MAX + args.max_value_bytes) as u64)
            .max(WAL_SEGMENT_BYTES_MIN);
        let seg = args.wal_segment_bytes;
        if seg < min_segment
            || seg > WAL_SEGMENT_BYTES_MAX
            || seg % WAL_ZERO_FILL_CHUNK_BYTES as u64 != 0
        {
            return Err(Error::BadSegmentSize {
                given: seg,
                min: min_segment,
            });
        }
        if !(1..=MAX_CLOCK_OFFSET_MS_CEILING).contains(&args.max_clock_offset_ms) {
            return Err(Error::BadClockOffset(args.max_clock_offset_ms));
        }
        if !(1..=AUTH_TIMEOUT_MS_MAX).contains(&args.auth_timeout_ms) {
            return Err(Error::BadAuthTimeout(args.auth_timeout_ms));
        }
        let creds = credentials(args, listen)?;
        let mut tls = crate::server::front::tls::Tls::load(
            args.tls_cert.as_deref(),
            args.tls_key.as_deref(),
            args.tls_ca.as_deref(),
            args.tls_client_ca.as_deref(),
        )?;
        if args.tls_only {
            match &mut tls {
                Some(t) if t.connector.is_some() => t.only = true,
                _ => return Err(Error::TlsOnlyWithoutTls),
            }
        }
        // Before anything in the data dir is read or written.
        let dir_lock = std::sync::Arc::new(DirLock::acquire(&args.data_dir)?);
        let node_id = resolve_node_id(&args.data_dir, args.node_id.as_deref())?;
        Ok(Config {
            dir_lock,
            wal_segment_bytes: seg,
            tombstone_grace_ms: args.tombstone_grace_ms,
            max_memory: (args.max_memory > 0).then_some(args.max_memory),
            max_clock_offset_ms: args.max_clock_offset_ms,
            auth_timeout_ms: args.auth_timeout_ms,
            hint_window_ms: args.hint_window_ms,
            anti_entropy_interval_ms: args.anti_entropy_interval_ms.max(1),
            creds,
            tls,
            node_id,
            listen,
            data_dir: args.data_dir.clone(),
            cores,
            pin: args.pin,
            seeds: args.seeds.clone(),
            fsync: args.fsync,
            wal_recovery: args.wal_recovery,
            max_value_bytes: args.max_value_bytes,
            max_connections: args.max_connections,
            idle_timeout_ms: args.idle_timeout_ms,
            replication,
            advertise,
            suspect_timeout_ms: args.suspect_timeout_ms,
            metrics: args.metrics_port.map(|p| SocketAddr::new(listen.ip(), p)),
        })
    }
}

/// The password and cluster secret (files, else variables) and the protection policy.
fn credentials(
    args: &Args,
    listen: SocketAddr,
) -> Result<std::sync::Arc<crate::server::front::auth::Credentials>, Error> {
    use crate::server::front::auth::{load, Credentials};
    let password = load(
        "password",
        args.password_file.as_deref(),
        std::env::var("KVSTORE_PASSWORD").ok(),
    )?;
    let secret = load(
        "cluster secret",
        args.cluster_secret_file.as_deref(),
        std::env::var("KVSTORE_CLUSTER_SECRET").ok(),
    )?;
    let reader = load(
        "read-only password",
        args.readonly_password_file.as_deref(),
        std::env::var("KVSTORE_READONLY_PASSWORD").ok(),
    )?;
    if reader.is_some() && password.is_none() {
        return Err(Error::ReaderWithoutPassword);
    }
    let mut c = Credentials::new(password, secret).with_reader(reader);
    c.protected = !c.has_password() && !listen.ip().is_loopback() && args.protected_mode == "yes";
    c.original_without_auth = args.original_protocol_without_auth;
    Ok(std::sync::Arc::new(c))
}

/// A memory size as Redis writes it: plain bytes, or a number with `k`/`m`/`g` (powers of
/// 1000) or `kb`/`mb`/`gb` (powers of 1024), case-insensitive.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?}: expected bytes, e.g. 1073741824, 1gb or 500mb"))?;
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (k, kb, m, mb, g, gb)"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too large"))
}

pub fn online_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(CORES_MAX)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let bad = |reason: String| Error::BadListen {
        addr: host.to_string(),
        reason,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no address".into()))
}

/// The node id: the flag, else the data dir's stored id, else the hostname. A data dir written
/// by another id refuses to start; a fresh one records the id.
fn resolve_node_id(dir: &Path, given: Option<&str>) -> Result<String, Error> {
    let io = |source| Error::DataDir {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(NODE_ID_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let id = match (given, &stored) {
        (Some(g), Some(s)) if g != s => {
            return Err(Error::NodeIdMismatch {
                dir: dir.to_path_buf(),
                stored: s.clone(),
                given: g.to_string(),
            })
        }
        (Some(g), _) => g.to_string(),
        (None, Some(s)) => s.clone(),
        (None, None) => hostname(),
    };
    if !valid_node_id(&id) {
        return Err(Error::BadNodeId(id));
    }
    if stored.is_none() {
        std::fs::write(&path, format!("{id}\n")).map_err(io)?;
        crate::storage::recovery::sync_dir(dir)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    }
    Ok(id)
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(NODE_ID_BYTES_MAX)
        .collect();
    if id.is_empty() {
        "node".to_string()
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rule_at_the_boundaries() {
        assert!(valid_node_id("a"));
        assert!(valid_node_id(&"a".repeat(NODE_ID_BYTES_MAX)));
        assert!(!valid_node_id(&"a".repeat(NODE_ID_BYTES_MAX + 1)));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a b"));
        assert!(valid_node_id("node-1.rack_2"));
    }

    /// Each numeric flag with a named bound: accepted at the bound, refused just past it.
    #[test]
    fn flag_limits_at_and_past_the_boundary() {
        let dir = crate::test_dir("config-flag-limits");
        let dir = dir.to_string_lossy().to_string();
        let config = |extra: &[&str]| {
            let mut argv = vec!["kvstore-node", "--node-id", "lim", "--data-dir", &dir];
            argv.extend_from_slice(extra);
            Config::from_args(&Args::try_parse_from(argv).expect("parse")).map(drop)
        };
        let n = |v: usize| v.to_string();
        let cores_max = n(CORES_MAX);
        assert!(config(&["--cores", &cores_max]).is_ok());
        assert!(matches!(
            config(&["--cores", &n(CORES_MAX + 1)]),
            Err(Error::BadCores(_))
        ));
        assert!(matches!(config(&["--cores", "0"]), Err(Error::BadCores(0))));
        assert!(config(&["--max-value-bytes", &n(VALUE_BYTES_CEILING)]).is_ok());
        for bad in [0, VALUE_BYTES_CEILING + 1] {
            assert!(matches!(
                config(&["--max-value-bytes", &n(bad)]),
                Err(Error::BadValueLimit(_))
            ));
        }
        assert!(config(&["--max-connections", &n(CONNECTIONS_MAX)]).is_ok());
        for bad in [0, CONNECTIONS_MAX + 1] {
            assert!(matches!(
                config(&["--max-connections", &n(bad)]),
                Err(Error::BadConnections(_))
            ));
        }
        let auth_max = AUTH_TIMEOUT_MS_MAX.to_string();
        assert!(config(&["--auth-timeout-ms", &auth_max]).is_ok());
        let past = (AUTH_TIMEOUT_MS_MAX + 1).to_string();
        for bad in ["0", past.as_str()] {
            assert!(matches!(
                config(&["--auth-timeout-ms", bad]),
                Err(Error::BadAuthTimeout(_))
            ));
        }
        let offset_max = MAX_CLOCK_OFFSET_MS_CEILING.to_string();
        assert!(config(&["--max-clock-offset-ms", &offset_max]).is_ok());
        assert!(config(&["--max-clock-offset-ms", "1"]).is_ok());
        let past = (MAX_CLOCK_OFFSET_MS_CEILING + 1).to_string();
        for bad in ["0", past.as_str()] {
            assert!(matches!(
                config(&["--max-clock-offset-ms", bad]),
                Err(Error::BadClockOffset(_))
            ));
        }
        // (a segment must also hold the largest record: small values for the small segment)
        let chunk = WAL_ZERO_FILL_CHUNK_BYTES as u64;
        let segment = |bytes: u64| {
            let bytes = bytes.to_string();
            config(&["--max-value-bytes", "1000", "--wal-segment-bytes", &bytes])
        };
        for good in [WAL_SEGMENT_BYTES_MIN, WAL_SEGMENT_BYTES_MAX] {
            assert!(segment(good).is_ok());
        }
        assert!(matches!(
            config(&["--wal-segment-bytes", &WAL_SEGMENT_BYTES_MIN.to_string()]),
            Err(Error::BadSegmentSize { .. })
        ));
        for bad in [
            WAL_SEGMENT_BYTES_MIN - chunk,
            WAL_SEGMENT_BYTES_MIN + 1,
            WAL_SEGMENT_BYTES_MAX + chunk,
        ] {
            assert!(matches!(segment(bad), Err(Error::BadSegmentSize { .. })));
        }
    }

    #[test]
    fn a_bad_listen_address_is_an_error_not_a_panic() {
        assert!(matches!(
            resolve("no such host .invalid", 1),
            Err(Error::BadListen { .. })
        ));
        assert!(resolve("127.0.0.1", 7001).is_ok());
    }

    #[test]
    fn a_data_dir_of_another_node_refuses() {
        let dir = crate::test_dir("config-node-id");
        assert_eq!(resolve_node_id(&dir, Some("n1")).expect("first"), "n1");
        assert_eq!(resolve_node_id(&dir, None).expect("stored"), "n1");
        assert!(matches!(
            resolve_node_id(&dir, Some("n2")),
            Err(Error::NodeIdMismatch { .. })
        ));
    }

    #[test]
    fn memory_sizes_parse_as_redis_writes_them() {
        assert_eq!(parse_memory("0"), Ok(0));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert_eq!(parse_memory("100mb"), Ok(100 << 20));
        assert_eq!(parse_memory("2GB"), Ok(2 << 30));
        assert_eq!(parse_memory("500k"), Ok(500_000));
        assert!(parse_memory("12tb").is_err());
        assert!(parse_memory("mb").is_err());
        assert!(parse_memory("-1").is_err());
        assert!(parse_memory("18446744073709551615").is_ok());
        assert!(parse_memory("18446744073709551615kb").is_err(), "overflow");
    }
}
