//! Every bound the node enforces, in one place (TigerBeetle's `constants.zig` habit).
//!
//! Names carry their unit and put the qualifier last (`KEY_BYTES_MAX`). Related limits are tied
//! together with `const` assertions so that changing one cannot silently break another.

/// Smallest key accepted by any protocol.
pub const KEY_BYTES_MIN: usize = 1;
/// Largest key accepted by any protocol.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Default largest value (`--max-value-bytes` changes it, up to `VALUE_BYTES_CEILING`).
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Hard ceiling for the configurable value limit.
pub const VALUE_BYTES_CEILING: usize = 15 * 1024 * 1024;
/// A stored value is a cell (`core::cell`): the client's bytes behind a tag byte and, when
/// the key expires, its expiry. Replica traffic, hints and the WAL carry cells.
pub const CELL_HEADER_BYTES_MAX: usize = 9;
pub const STORED_VALUE_BYTES_CEILING: usize = VALUE_BYTES_CEILING + CELL_HEADER_BYTES_MAX;
/// Latest expiry accepted: 9999-12-31T23:59:59.999Z, in ms since the Unix epoch.
pub const EXPIRES_AT_MS_MAX: u64 = 253_402_300_799_999;
/// Keys past their expiry become tombstones (their values' memory freed) in a sweep every
/// this often, at most this many per core per sweep; compaction later purges the tombstones.
pub const EXPIRY_SWEEP_INTERVAL_MS: u64 = 250;
pub const EXPIRY_SWEEP_KEYS_MAX: usize = 20_000;
/// A coordinator issues versions that leave the node only below a clock lease it made durable
/// first (`core::version`); each lease covers this much more (one fsync per core per lease).
pub const CLOCK_LEASE_MS: u64 = 1_000;
/// Native protocol: version byte + fixed header.
pub const NATIVE_HEADER_BYTES: usize = 1 + 32;
/// Largest native frame: header plus the largest key and value the node can ever accept.
pub const FRAME_BYTES_MAX: usize = NATIVE_HEADER_BYTES + KEY_BYTES_MAX + STORED_VALUE_BYTES_CEILING;
/// RESP: arguments in one command (Redis's own multibulk bound: 1,048,576, so `DEL` of a
/// million keys, `MSET` of half a million pairs). What bounds a command's memory is its bytes.
pub const RESP_ARGS_MAX: usize = 1 + 1024 * 1024;
/// RESP: one command's bytes, headers included (Redis bounds its query buffer at 1 GB). A
/// command is held whole in its connection's read buffer until it is answered.
pub const RESP_COMMAND_BYTES_MAX: usize = 128 * 1024 * 1024;
const _: () = assert!(RESP_COMMAND_BYTES_MAX > 2 * (KEY_BYTES_MAX + VALUE_BYTES_CEILING));
/// RESP: an inline command line (Redis uses the same 64 KiB).
pub const RESP_INLINE_BYTES_MAX: usize = 64 * 1024;
/// RESP: a `*<n>` or `$<len>` header line, CRLF included.
pub const RESP_LINE_BYTES_MAX: usize = 32;
/// Largest error message carried in a reply.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// Open client connections per node (across all cores).
pub const CONNECTIONS_MAX: usize = 10_000;
/// Requests one connection may have decoded but not yet answered.
pub const INFLIGHT_REQUESTS_MAX: usize = 1024;
/// Replies one connection's batch may hold: a batch stops taking reads once that many reads of
/// the largest allowed value could exceed it (64 reads of 1 MiB, 1024 of up to 64 KiB).
pub const REPLY_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// One command's reply (MGET, KEYS, …): past it the command answers an error instead, and
/// what it had gathered is freed. Values are gathered in waves of at most a batch's reads, so
/// a command never holds much more than this.
pub const REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Values one core's connections may hold for replies not yet sent, all together: past it a
/// command that gathers more answers an error (retry later). Counted toward `--max-memory`.
pub const CORE_REPLY_BYTES_MAX: usize = 256 * 1024 * 1024;
const _: () = assert!(REPLY_BYTES_MAX <= CORE_REPLY_BYTES_MAX);
const _: () = assert!(VALUE_BYTES_CEILING <= REPLY_BYTES_MAX);
/// A connection's output buffer above this capacity is given back after its batch is sent.
pub const OUT_BUFFER_KEEP_BYTES: usize = 1024 * 1024;
/// Default idle timeout for a client connection.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// A frame that has started must be complete within this time (slow clients cannot pin memory).
pub const FRAME_DEADLINE_MS: u64 = 10_000;
/// Read deadlines (idle, frame) are checked this many times per the shortest of them...
pub const READ_DEADLINE_TICKS_PER_TIMEOUT: u64 = 8;
/// ...but no more often than this (a 0 ms idle timeout must not spin the reaper)...
pub const READ_DEADLINE_TICK_MS_MIN: u64 = 10;
/// ...and no less often than this: a deadline is enforced at most this late.
pub const READ_DEADLINE_TICK_MS_MAX: u64 = 1_000;

/// Virtual nodes per physical node on the ring.
pub const VNODES_PER_NODE: usize = 150;
/// Executors (cores) per node.
pub const CORES_MAX: usize = 64;
/// Capacity of each core's inbound message channel.
pub const CORE_CHANNEL_CAPACITY: usize = 4096;

/// WAL record header bytes (see `storage::record`).
pub const WAL_RECORD_HEADER_BYTES: usize = 48;
/// Largest key field of a WAL record: a key, or a hint's target id (length byte + id) and key.
pub const WAL_KEY_FIELD_BYTES_MAX: usize = KEY_BYTES_MAX + 1 + NODE_ID_BYTES_MAX;
/// Largest WAL record: header plus the largest key field and value.
pub const WAL_RECORD_BYTES_MAX: usize =
    WAL_RECORD_HEADER_BYTES + WAL_KEY_FIELD_BYTES_MAX + STORED_VALUE_BYTES_CEILING;
/// Anti-entropy: leaves of a replica pair's hash tree (2^bits), leaves whose keys are listed
/// per request, keys exchanged at most per round with one peer, and the default time between
/// rounds (`--anti-entropy-interval-ms`).
pub const ANTI_ENTROPY_LEAF_BITS: u32 = 12;
pub const ANTI_ENTROPY_LEAVES_PER_REQUEST: usize = 64;
pub const ANTI_ENTROPY_KEYS_PER_ROUND_MAX: usize = 1_000_000;
pub const ANTI_ENTROPY_INTERVAL_MS_DEFAULT: u64 = 30_000;
/// SCAN: the hash space is visited in this many slices (each a pass over every node's keys),
/// and one call returns at most this many keys (KEYS past it is refused: use SCAN).
pub const SCAN_SLICES: u64 = 256;
pub const SCAN_KEYS_MAX: usize = 10_000;
/// Keys one core holds consensus acceptor state for (`storage::acceptors`).
pub const ACCEPTOR_KEYS_PER_CORE_MAX: usize = 1_000_000;
/// Hinted handoff, per core: hints held at most (count and key + value bytes), and how long
/// after a target's first undelivered hint new hints for it are still taken (Cassandra's
/// `max_hint_window`, default 3 h; `--hint-window-ms`). Past these, the write is left to read
/// repair and anti-entropy, and counted as dropped.
pub const HINTS_PER_CORE_MAX: usize = 1_000_000;
pub const HINT_BYTES_PER_CORE_MAX: u64 = 256 * 1024 * 1024;
pub const HINT_WINDOW_MS_DEFAULT: u64 = 3 * 3600 * 1000;
/// Hints are delivered to a target that is ALIVE again every this often, this many at once
/// (pipelined on the peer connection).
pub const HINT_DELIVERY_INTERVAL_MS: u64 = 250;
pub const HINT_DELIVERY_BATCH: usize = 512;
/// A WAL segment is rolled once it would grow past this size (records never span segments).
pub const WAL_SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Smallest `--wal-segment-bytes` (tests use it to roll and compact often).
pub const WAL_SEGMENT_BYTES_MIN: u64 = 1024 * 1024;
/// Compaction: a core compacts once its WAL holds more than this many times the bytes of a
/// snapshot of its map (and more than one segment); checked this often; a snapshot is written
/// in slices of this many keys, each awaited before the next (requests run in between).
pub const COMPACTION_RATIO: u64 = 2;
pub const COMPACTION_CHECK_MS: u64 = 1_000;
pub const COMPACTION_SLICE_KEYS: usize = 1024;
/// CPU shares of the background task queue: compaction and hint delivery (requests: 1000).
pub const COMPACTION_TASK_SHARES: usize = 200;
/// Default `--tombstone-grace-ms`: 10 days, Cassandra's `gc_grace_seconds` default.
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 10 * 24 * 3600 * 1000;
/// A new segment is zero-filled (after fallocate) in writes of this size, so every later WAL
/// write is a pure overwrite that io_uring issues inline (see `storage::wal_file`).
pub const WAL_ZERO_FILL_CHUNK_BYTES: usize = 256 * 1024;
/// Replay reads each segment whole (damage can sit anywhere), in reads of this size.
pub const RECOVERY_READ_CHUNK_BYTES: usize = 1024 * 1024;
/// `kv info` and `INFO` show at most this many of the latest WAL damage findings.
pub const WAL_FINDINGS_SHOWN_MAX: usize = 16;
/// A node owing a repair after WAL damage retries its anti-entropy pass this often.
pub const WAL_REPAIR_RETRY_MS: u64 = 1_000;
/// The scrubber re-reads sealed segments at most this fast, in reads of `SCRUB_READ_BYTES`,
/// in a task queue of `SCRUB_TASK_SHARES` (behind requests).
pub const SCRUB_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;
pub const SCRUB_READ_BYTES: usize = 1024 * 1024;
pub const SCRUB_TASK_SHARES: usize = 50;
/// A background scrub pass starts this long after the last one ended (`kv scrub`: now).
pub const SCRUB_PASS_INTERVAL_MS: u64 = 6 * 3600 * 1000;
/// Group commit: the writer takes at most this many pending bytes per write.
pub const WAL_GROUP_BYTES_MAX: usize = 1024 * 1024;
/// `--fsync interval` syncs this often.
pub const WAL_SYNC_INTERVAL_MS: u64 = 1_000;
/// Per core, the staging file that `--fsync interval`/`none` acknowledge in (`stage`): a group
/// that does not fit while older staged records wait for their segment write waits too.
pub const STAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Staged records go to their segment once this many bytes or this much time has gathered
/// (what a power loss can take on top of `WAL_SYNC_INTERVAL_MS`). Small enough that the copy
/// of a flush into its DMA buffer, on the executor, is a short stall (1 MiB cost SET p99
/// 0.69–0.73 ms against 0.54–0.58 at 256 KiB, with chunks sized ahead, on one core).
pub const STAGE_FLUSH_BYTES: usize = 256 * 1024;
pub const STAGE_FLUSH_MS: u64 = 200;
const _: () = assert!(STAGE_FLUSH_BYTES as u64 * 2 <= STAGE_BYTES);
/// When the disk is full, writes are retried this often.
pub const WAL_DISK_FULL_RETRY_MS: u64 = 1_000;

/// At start, how long to wait for a dead process's closing sockets to free the port.
pub const BIND_RETRY_MS: u64 = 10_000;
/// At start, how long to wait for a PING from whatever holds our port, and between retries.
pub const BIND_PROBE_TIMEOUT_MS: u64 = 300;
pub const BIND_RETRY_PAUSE_MS: u64 = 50;
/// After a failed accept (e.g. EMFILE), pause before accepting again.
pub const ACCEPT_RETRY_PAUSE_MS: u64 = 10;
/// Read chunk of the client library and of peer connections.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// io_uring registered memory per executor (must fit `ulimit -l` times cores).
pub const IO_MEMORY_BYTES_PER_CORE: usize = 512 * 1024;
/// Versions more than this far ahead of a replica's clock are refused and logged.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// Default `--max-clock-offset-ms`: a node further than this from a majority of its peers
/// fences itself (CockroachDB's `--max-offset` default; NTP keeps clocks within tens of ms,
/// and a version this far ahead outlives at most this much of a later write's real time).
pub const MAX_CLOCK_OFFSET_MS_DEFAULT: u64 = 500;
/// The largest `--max-clock-offset-ms`: a fenced node must be fenced before replicas refuse
/// its versions as too far ahead, or a write refused everywhere else would stay on its own
/// replica (and win every later read that hears it).
pub const MAX_CLOCK_OFFSET_MS_CEILING: u64 = MAX_CLOCK_SKEW_MS / 2;
const _: () = assert!(MAX_CLOCK_OFFSET_MS_DEFAULT <= MAX_CLOCK_OFFSET_MS_CEILING);
/// A write coordinated before this node's clock was first measured against a peer (just
/// after a start) waits up to this long for that measurement, then is refused.
pub const CLOCK_FIRST_PROBE_WAIT_MS: u64 = 2 * PROBE_INTERVAL_MS;
/// How often such a write looks again.
pub const CLOCK_UNMEASURED_POLL_MS: u64 = 10;
/// A core repeats a warning that could come with every request (a peer's wrong clock, a
/// replica left out, hints dropped) at most this often.
pub const WARN_LOG_INTERVAL_MS: u64 = 1_000;
/// A write refused as stale (a replica holds a newer version) is retried with a newer version
/// up to this many attempts in all (a read-modify-write reads again as often); then the client
/// gets a "stale" error.
pub const STALE_WRITE_ATTEMPTS_MAX: u32 = 12;
/// The cap of the randomised pause before a write that lost to a newer version goes again
/// (none before the first retry, then doubling from 4 ms): enough for a writer starved of CPU
/// for a moment to get its turn.
pub const STALE_RETRY_PAUSE_MS_MAX: u64 = 32;
/// A replica RPC (write, read, repair) that has not answered in this time counts as failed.
pub const REPLICA_TIMEOUT_MS: u64 = 2_000;
/// A conditional command (consensus): rounds at most, all within this time (a side without a
/// majority of the key's replicas answers an error by then), and the cap of the randomised
/// pause between lost rounds.
pub const CONSENSUS_ATTEMPTS_MAX: u32 = 24;
pub const CONSENSUS_TIMEOUT_MS: u64 = 5_000;
pub const CONSENSUS_BACKOFF_MS_MAX: u64 = 40;
/// Commands one consensus round carries at most (those queued for its key meanwhile).
pub const CONSENSUS_BATCH_MAX: usize = 256;
/// Connecting to a peer gives up after this long.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// After a failed connect to a peer, requests to it fail at once for this long.
pub const PEER_RECONNECT_BACKOFF_MS: u64 = 200;
/// Requests one core may have waiting for answers on one peer connection before its
/// coordinators wait (backpressure from a replica that falls behind).
pub const PEER_INFLIGHT_MAX: usize = 1024;
/// A coordinator waits at most this long for room on a replica's connection; then it leaves
/// that replica out of the operation (counted as a failed replica, brought up to date later by
/// read repair), so a replica that hangs without dying costs this much latency, not a stall.
pub const PEER_ROOM_WAIT_MS: u64 = 100;
/// A peer with requests pending that has answered none of them for this long is stalled
/// (silent, stopped, cut off): coordinators leave it out at once rather than wait
/// `PEER_ROOM_WAIT_MS` for room on its connection. A busy peer answers every few ms.
pub const PEER_STALL_MS: u64 = 50;
/// Tick of a peer connection's timeout clock: a peer request times out between its timeout and
/// its timeout plus two ticks (no timer per request).
pub const PEER_TIMEOUT_TICK_MS: u64 = 100;
/// SWIM: probe one member this often; its direct probe times out after the probe timeout.
pub const PROBE_INTERVAL_MS: u64 = 1_000;
pub const PROBE_TIMEOUT_MS: u64 = 500;
/// SWIM: members asked to probe a silent member on our behalf.
pub const INDIRECT_PROBES: usize = 3;
/// SWIM: having heard from a member ourselves this recently outweighs another node's
/// accusation of it (gossip reaches every live member every `GOSSIP_INTERVAL_MS`).
pub const DIRECT_CONTACT_FRESH_MS: u64 = PROBE_INTERVAL_MS;
/// Gossip to this many random members every `GOSSIP_INTERVAL_MS`.
pub const GOSSIP_FANOUT: usize = 3;
pub const GOSSIP_INTERVAL_MS: u64 = 200;
/// CPU shares of the membership task queue (the default queue, serving requests, has 1000).
pub const MEMBERSHIP_TASK_SHARES: usize = 100;
/// Default time a SUSPECT member has to refute before it is DEAD.
pub const SUSPECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Joins and leaves: records per batch of a range stream (their replica writes are in flight
/// together), how long one source's stream may take, how long to wait for every live member
/// to acknowledge a change, and how often to check.
pub const STREAM_BATCH_KEYS: usize = 256;
pub const STREAM_TIMEOUT_MS: u64 = 600_000;
pub const TOPOLOGY_ACK_WAIT_MS: u64 = 30_000;
pub const TOPOLOGY_POLL_MS: u64 = 200;
/// A node that is in no cluster yet logs why this often (and whenever the reason changes).
pub const WAITING_LOG_INTERVAL_MS: u64 = 10_000;
/// How often a node checks whether a finished join or leave left it copies to drop.
pub const TOPOLOGY_DROP_CHECK_MS: u64 = 1_000;
/// `--metrics-port`: largest HTTP request head, and how long a scraper may take to send it.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;
pub const METRICS_TIMEOUT_MS: u64 = 5_000;
/// Largest gossip payload (JSON of every member).
pub const GOSSIP_BYTES_MAX: usize = 256 * 1024;
/// A connection is closed after this many wrong passwords; each is answered only after the
/// delay (brute force gets a handful of guesses a second per connection).
pub const AUTH_FAILURES_MAX: u32 = 10;
pub const AUTH_FAILURE_DELAY_MS: u64 = 200;
/// Default `--auth-timeout-ms`: a connection that has not authenticated (AUTH, or a peer's
/// proof of the cluster secret) this long after opening is closed, whatever it sends
/// (MySQL's `connect_timeout`; PostgreSQL's `authentication_timeout` is 60 s).
pub const AUTH_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Largest `--auth-timeout-ms`.
pub const AUTH_TIMEOUT_MS_MAX: u64 = 600_000;
/// Unauthenticated connections may hold at most this share of `--max-connections` (split over
/// the cores); past it a new one evicts the oldest (OpenSSH's `MaxStartups`).
pub const UNADMITTED_SHARE_PERCENT: usize = 25;
/// Client library: default connect / request timeout.
pub const CLIENT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Node ids: `[A-Za-z0-9._-]{1,64}`.
pub const NODE_ID_BYTES_MAX: usize = 64;

const _: () =
    assert!(FRAME_BYTES_MAX >= NATIVE_HEADER_BYTES + KEY_BYTES_MAX + VALUE_BYTES_MAX_DEFAULT);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_CEILING);
const _: () = assert!((WAL_RECORD_BYTES_MAX as u64) < WAL_SEGMENT_BYTES_MAX);
const _: () = assert!(WAL_SEGMENT_BYTES_MAX % (WAL_ZERO_FILL_CHUNK_BYTES as u64) == 0);
const _: () = assert!(WAL_SEGMENT_BYTES_MIN % (WAL_ZERO_FILL_CHUNK_BYTES as u64) == 0);
const _: () = assert!(COMPACTION_RATIO >= 2);
const _: () = assert!(
    FRAME_BYTES_MAX < 16 * 1024 * 1024,
    "original protocol first byte rule"
);
const _: () = assert!(
    CORES_MAX <= 256,
    "core index fits the low byte of a writer id"
);
