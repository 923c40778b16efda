//! Start-up, the per-core main task, and clean shutdown.
//!
//! Order at start: bind the port exclusively (no SO_REUSEPORT: a second node on a taken port
//! must fail, not silently share it), replay the WAL into one map per core, start one glommio
//! executor per core, have each core write its map as a snapshot into a fresh segment, delete
//! the replayed segments once every snapshot is synced, then serve.
//!
//! Shutdown (SIGTERM/SIGINT): stop accepting; connections finish the requests they have read
//! and close; each core announces it is drained and keeps answering other cores until all are;
//! then each WAL writes what is pending, syncs and closes. Exit status 0.

use crate::server::cluster::links::PeerLinks;
use std::cell::{Cell, RefCell};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use glommio::{CpuSet, LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::core::membership::Timing;
use crate::core::quorum::Replication;
use crate::core::ring::LocalRing;
use crate::core::version::{writer_id, Clock};
use crate::core::wal_damage::{self, Decision};
use crate::limits::{
    BIND_PROBE_TIMEOUT_MS, BIND_RETRY_PAUSE_MS, COMPACTION_TASK_SHARES, MEMBERSHIP_TASK_SHARES,
    SCRUB_TASK_SHARES,
};
use crate::limits::{
    BIND_RETRY_MS, CORE_CHANNEL_CAPACITY, IO_MEMORY_BYTES_PER_CORE, WAL_GROUP_BYTES_MAX,
};
use crate::server::cluster::gossip::Gossip;
use crate::server::cluster::peer::Peer;
use crate::server::cluster::view::RingView;
use crate::server::data::hops::Hops;
use crate::server::data::messages::{CoreMsg, OpResult};
use crate::server::data::shard::{storage_failure, Shard};
use crate::server::data::{compactor, handoff};
use crate::server::front::listener;
use crate::server::notify::{Latch, Notify};
use crate::server::{Error, NodeInfo};
use crate::storage::acceptors::AcceptorStore;
use crate::storage::core_dir_name;
use crate::storage::hints::HintStore;
use crate::storage::map::Map;
use crate::storage::record::Kind;
use crate::storage::recovery::{self, SegmentFile};
use crate::storage::wal_file::{FsyncMode, Wal};

/// Everything one core's tasks share (single-threaded; never crosses cores).
pub struct CoreCtx {
    pub core: usize,
    pub ring: LocalRing,
    pub shard: Shard,
    pub peers: Vec<flume::Sender<CoreMsg>>,
    /// Operations for keys other cores own leave through here, one message per core per turn.
    pub hops: Rc<Hops>,
    pub node: Arc<NodeInfo>,
    pub shutdown: Latch,
    /// Read deadlines of this core's client connections (`front::deadline`).
    pub read_deadlines: crate::server::front::deadline::Deadlines,
    /// Client connections open on this core.
    pub connections: Cell<usize>,
    /// This core's connections that have not authenticated yet (`front::admission`).
    pub admission: crate::server::front::admission::Pool,
    pub connections_changed: Notify,
    drained: Cell<usize>,
    /// The ring this core routes by (replaced by `CoreMsg::Ring` from the gossip core).
    view: RefCell<Arc<RingView>>,
    /// This core's own links to other nodes, by address.
    pub links: PeerLinks,
    /// The membership shell (core 0 only).
    pub gossip: Option<Rc<Gossip>>,
    /// Warnings that could come with every request, throttled.
    pub skip_log: crate::server::LogThrottle,
    pub hint_drop_log: crate::server::LogThrottle,
    /// This core's counters and histograms (read by `/metrics` through a message).
    pub metrics: crate::server::metrics::CoreMetrics,
    /// One compaction at a time (the periodic one, or the scrubber's rewrite of damage).
    pub compaction_turn: glommio::sync::Semaphore,
    /// Conditional commands waiting for their key's round (`data::consensus`).
    pub consensus: crate::server::data::consensus::Queues,
}

impl CoreCtx {
    pub fn connection_opened(&self) {
        self.connections.set(self.connections.get() + 1);
    }

    pub fn view(&self) -> Arc<RingView> {
        self.view.borrow().clone()
    }

    /// Whether this node is alone in its ring (requests then stay on this node).
    pub fn is_solo(&self) -> bool {
        self.view.borrow().is_solo()
    }

    /// This core's link to the peer at `addr` (made on first use).
    pub fn peer(&self, addr: &str) -> Rc<Peer> {
        self.links.get(addr)
    }

    /// Ask every other core of this node the message `make` builds around a reply channel, and
    /// gather their answers in core order.
    pub async fn ask_other_cores<T>(
        &self,
        make: impl Fn(flume::Sender<T>) -> CoreMsg,
    ) -> Result<Vec<T>, String> {
        let mut answers = Vec::with_capacity(self.peers.len());
        for core in (0..self.peers.len()).filter(|c| *c != self.core) {
            let (tx, rx) = flume::bounded(1);
            self.peers[core]
                .send_async(make(tx))
                .await
                .map_err(|_| format!("core {core} is gone"))?;
            let answer = rx
                .recv_async()
                .await
                .map_err(|_| format!("core {core} did not answer"))?;
            answers.push(answer);
        }
        Ok(answers)
    }

    pub fn metrics_snapshot(&self) -> crate::server::metrics::MetricsSnapshot {
        let stats = self.shard.stats(self.connections.get());
        self.metrics
            .snapshot(stats, self.peers[self.core].len(), self.hops.counts())
    }

    pub fn connection_closed(&self) {
        self.connections.set(self.connections.get() - 1);
        self.node
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.connections_changed.notify_all();
    }
}

/// Run a node until it is shut down. Blocks the calling thread.
pub fn run(config: Config) -> Result<(), Error> {
    let started = Instant::now();
    raise_nofile_limit(config.max_connections);
    let listener_fd = bind_exclusive(config.listen)?;
    let metrics_fd = match config.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|source| Error::Listen { addr, source })?
                .into_raw_fd(),
        ),
        None => None,
    };
    if config.creds.secret().is_none()
        && (!config.seeds.is_empty() || !config.listen.ip().is_loopback())
    {
        log::warn!(
            "no cluster secret: anything that reaches port {} can send replica, gossip and \
             stream frames; set --cluster-secret-file or KVSTORE_CLUSTER_SECRET on every node",
            config.listen.port()
        );
    }
    if config.creds.protected {
        log::warn!(
            "protected mode: no password and listening on {}: clients beyond loopback are \
             refused (set a password, or --protected-mode no)",
            config.listen
        );
    }
    let ring = LocalRing::new(&config.node_id, config.cores);
    let recovered = recovery::recover(&config.data_dir, &ring)?;
    let wal_health = crate::server::wal_health::WalHealth::new(config.data_dir.clone());
    wal_health.record(&recovered.report);
    let owed = recovery::repair_pending(&config.data_dir);
    let clustered = !config.seeds.is_empty();
    match wal_damage::decide(
        config.wal_recovery,
        recovered.report.is_corrupt() || owed,
        clustered,
    ) {
        Decision::Serve => {
            if recovered.report.is_corrupt() || owed {
                log::error!(
                    "wal: serving with {} records lost (--wal-recovery skip-corrupt)",
                    recovered.report.records_lost()
                );
                recovery::set_repair_pending(&config.data_dir, false)?;
            }
        }
        Decision::RepairFirst => wal_health.owe_repair()?,
        Decision::Refuse => {
            return Err(Error::WalCorrupt(crate::server::wal_health::refusal(
                &recovered.report,
                &recovered.kept,
            )))
        }
    }
    let boot = crate::storage::boot_mark::current();
    let left_behind = crate::storage::boot_mark::left_behind(&config.data_dir)?;
    let power_lost = wal_damage::power_loss_suspected(left_behind.as_deref(), boot.as_deref());
    if power_lost {
        log::warn!(
            "wal: the machine restarted under the last run (it did not stop cleanly, boot id \
             {:?} then, {:?} now): under --fsync interval, writes acknowledged in its last \
             ~1 s may be lost{}",
            left_behind.as_deref().unwrap_or_default(),
            boot.as_deref().unwrap_or("unknown"),
            if clustered {
                "; the peers hold them"
            } else {
                ""
            }
        );
    }
    if wal_damage::after_power_loss(power_lost, clustered) == Decision::RepairFirst {
        wal_health.owe_repair()?;
    }
    crate::storage::boot_mark::mark_running(
        &config.data_dir,
        boot.as_deref().unwrap_or("unknown"),
    )?;
    log::info!(
        "node {}: replayed {} records from {} segments ({} keys) in {:.3}s",
        config.node_id,
        recovered.records,
        recovered.segments.len(),
        recovered.maps.iter().map(|m| m.live_len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    let node = Arc::new(NodeInfo {
        node_id: config.node_id.clone(),
        addr: config.listen,
        cores: config.cores,
        started,
        max_value_bytes: config.max_value_bytes,
        max_connections: config.max_connections,
        idle_timeout_ms: config.idle_timeout_ms,
        auth_timeout_ms: config.auth_timeout_ms,
        connections: Arc::new(AtomicUsize::new(0)),
        advertise: config.advertise.clone(),
        fsync: config.fsync,
        wal_segment_bytes: config.wal_segment_bytes,
        max_memory: config.max_memory,
        anti_entropy_interval_ms: config.anti_entropy_interval_ms,
        repaired_through_ms: std::sync::atomic::AtomicU64::new(0),
        creds: config.creds.clone(),
        tls: config.tls.clone(),
        tombstone_grace_ms: config.tombstone_grace_ms,
        wal: wal_health,
        clock: crate::server::clock_fence::ClockFence::new(
            config.max_clock_offset_ms,
            started,
            crate::server::cluster::gossip::knows_peers(
                &config.data_dir,
                &config.node_id,
                &config.seeds,
            ),
        ),
    });
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..config.cores)
        .map(|_| flume::bounded(CORE_CHANNEL_CAPACITY))
        .unzip();
    let (snap_tx, snap_rx) = flume::bounded::<usize>(config.cores);
    spawn_signal_thread(senders.clone());

    let mut handles = Vec::new();
    let old_segments = recovered.segments;
    let old_stages = recovered.stages;
    let mut listener_fd = Some(listener_fd);
    let mut metrics_fd = metrics_fd;
    let cores_input = recovered
        .maps
        .into_iter()
        .zip(recovered.hints)
        .zip(recovered.acceptors)
        .zip(receivers);
    for (core, (((map, mut hints), acceptors), rx)) in cores_input.enumerate() {
        hints.set_window_ms(config.hint_window_ms);
        let placement = if config.pin {
            Placement::Fixed(core)
        } else {
            unbound_placement()
        };
        let start = CoreStart {
            core,
            map,
            hints,
            acceptors,
            rx,
            peers: senders.clone(),
            node: node.clone(),
            ring: ring.clone(),
            wal_dir: config.data_dir.join(core_dir_name(core)),
            fsync: config.fsync,
            run: recovered.next_segment_id,
            listener_fd: if core == 0 { listener_fd.take() } else { None },
            metrics_fd: if core == 0 { metrics_fd.take() } else { None },
            snap_tx: snap_tx.clone(),
            snap_rx: if core == 0 {
                Some(snap_rx.clone())
            } else {
                None
            },
            old_stages: if core == 0 {
                old_stages.clone()
            } else {
                Vec::new()
            },
            old_segments: if core == 0 {
                old_segments.clone()
            } else {
                Vec::new()
            },
            data_dir: config.data_dir.clone(),
            seeds: config.seeds.clone(),
            replication: config.replication,
            suspect_timeout_ms: config.suspect_timeout_ms,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("kv-core-{core}"))
            .io_memory(IO_MEMORY_BYTES_PER_CORE)
            .spawn(move || async move { core_main(start).await })
            .map_err(|e| Error::Executor {
                core,
                cause: e.to_string(),
            })?;
        handles.push((core, handle));
    }
    // Join every core from its own thread, so a core that fails (e.g. io_uring cannot start)
    // ends the node at once instead of leaving the others waiting for it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for (core, h) in handles {
        let tx = done_tx.clone();
        std::thread::spawn(move || {
            let r = match h.join() {
                Ok(r) => r,
                // The executor started (that is checked at spawn): its thread died, i.e. a
                // panic, whose message the panic hook printed above.
                Err(e) => Err(Error::Core {
                    core,
                    cause: format!("stopped unexpectedly ({e}); the panic message above says why"),
                }),
            };
            let _ = tx.send(r);
        });
    }
    drop(done_tx);
    for r in done_rx {
        if let Err(e) = r {
            log::error!("{e}");
            return Err(e);
        }
    }
    crate::storage::boot_mark::mark_stopped(&config.data_dir)?;
    log::info!("node {}: shut down cleanly", config.node_id);
    Ok(())
}

fn unbound_placement() -> Placement {
    match CpuSet::online() {
        Ok(set) => Placement::Fenced(set),
        Err(_) => Placement::Unbound,
    }
}

struct CoreStart {
    core: usize,
    map: Map,
    hints: HintStore,
    acceptors: AcceptorStore,
    rx: flume::Receiver<CoreMsg>,
    peers: Vec<flume::Sender<CoreMsg>>,
    node: Arc<NodeInfo>,
    ring: LocalRing,
    wal_dir: PathBuf,
    fsync: FsyncMode,
    /// This start's run: core `c` writes segments `run + c + k * cores`.
    run: u64,
    listener_fd: Option<RawFd>,
    metrics_fd: Option<RawFd>,
    snap_tx: flume::Sender<usize>,
    snap_rx: Option<flume::Receiver<usize>>,
    old_segments: Vec<SegmentFile>,
    /// Staging files replayed at start: removed with the segments.
    old_stages: Vec<PathBuf>,
    data_dir: PathBuf,
    seeds: Vec<String>,
    replication: Replication,
    suspect_timeout_ms: u64,
}

async fn core_main(s: CoreStart) -> Result<(), Error> {
    let cores = s.node.cores;
    let wal = Rc::new(
        Wal::with_segment_size(
            &s.wal_dir,
            s.fsync,
            s.run + s.core as u64,
            cores as u64,
            s.node.wal_segment_bytes,
        )?
        .with_chain(s.run, s.core as u32),
    );
    let segment = wal.open().await?;
    let flusher = glommio::spawn_local(wal.clone().run_flusher(segment));
    snapshot(&s.map, &s.hints, &s.acceptors, &wal).await?;
    s.snap_tx
        .send_async(s.core)
        .await
        .map_err(|e| core_err(s.core, e))?;
    if let Some(rx) = &s.snap_rx {
        for _ in 0..cores {
            rx.recv_async().await.map_err(|e| core_err(s.core, e))?;
        }
        remove_superseded(&s.old_segments, &s.data_dir)?;
        let live = |p: &PathBuf| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.and_then(|n| crate::storage::stage::parse_file_name(&n)) == Some(s.run)
        };
        for stage in s.old_stages.iter().filter(|p| !live(p)) {
            std::fs::remove_file(stage).map_err(|e| crate::storage::Error::io(stage, e))?;
        }
        log::info!(
            "node {}: serving on {} with {} cores (started in {:.3}s)",
            s.node.node_id,
            s.node.addr,
            cores,
            s.node.started.elapsed().as_secs_f64()
        );
    }
    let mut clock = Clock::new(writer_id(&s.node.node_id, s.core));
    if let Err(e) = clock.observe(s.map.max_version(), crate::server::wall_clock_ms()) {
        log::warn!(
            "core {}: the WAL holds a {e}; our clock stays at our time",
            s.core
        );
    }
    // Versions that left before they were durable here were issued below the last lease.
    let core_dir = s.data_dir.join(crate::storage::core_dir_name(s.core));
    let lease = crate::storage::clock_lease::read(&core_dir).map_err(|e| core_err(s.core, e))?;
    clock.resume_after(lease);
    let solo = RingView::solo(&s.node.node_id, &s.node.advertise, s.replication);
    let gossip = (s.core == 0).then(|| {
        let timing = Timing {
            suspect_timeout_ms: s.suspect_timeout_ms,
            ..Timing::default()
        };
        Rc::new(Gossip::new(
            &s.node.node_id,
            &s.node.advertise,
            &s.data_dir,
            s.seeds.clone(),
            s.replication,
            timing,
        ))
    });
    let identity = s.node.creds.secret().map(|secret| {
        Rc::new(crate::server::cluster::peer::Identity {
            me: s.node.node_id.clone(),
            secret: secret.to_vec(),
        })
    });
    let peer_tls = s.node.tls.as_ref().and_then(|t| t.connector.clone());
    let unadmitted = crate::server::front::admission::unadmitted_max(s.node.max_connections, cores);
    let ctx = Rc::new(CoreCtx {
        core: s.core,
        ring: s.ring,
        shard: Shard::new(
            s.core,
            s.map,
            clock,
            wal.clone(),
            s.node.max_memory.map(|m| m / cores as u64),
            (s.hints, s.acceptors),
            core_dir,
        ),
        hops: Rc::new(Hops::new(s.peers.clone())),
        peers: s.peers,
        node: s.node,
        shutdown: Latch::default(),
        connections: Cell::new(0),
        admission: crate::server::front::admission::Pool::new(unadmitted),
        connections_changed: Notify::default(),
        drained: Cell::new(0),
        view: RefCell::new(Arc::new(solo)),
        links: PeerLinks::new(identity, peer_tls),
        gossip,
        metrics: Default::default(),
        compaction_turn: glommio::sync::Semaphore::new(1),
        consensus: Default::default(),
        read_deadlines: Default::default(),
        skip_log: Default::default(),
        hint_drop_log: Default::default(),
    });
    let mailbox = glommio::spawn_local(mailbox(ctx.clone(), s.rx));
    // Lives as long as the executor: connections and coordinators hop until the last drains.
    glommio::spawn_local(ctx.hops.clone().run()).detach();
    let reaper = {
        let c = ctx.clone();
        let tick = crate::server::front::deadline::tick_for(c.node.idle_timeout_ms);
        glommio::spawn_local(async move {
            crate::server::front::deadline::run(&c.read_deadlines, &c.shutdown, tick).await
        })
    };
    let acceptor = s.listener_fd.map(|fd| {
        // SAFETY: the fd is a bound, listening socket created by `bind_exclusive`, owned by
        // nobody else from here on.
        let l = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
        glommio::spawn_local(listener::accept_loop(ctx.clone(), l))
    });
    let membership = ctx
        .gossip
        .clone()
        .map(|g| {
            // Dissemination and bookkeeping run in their own low-share queue: they neither
            // delay requests nor starve (glommio gives every queue its share of the CPU).
            // Probes and gossip *answers* are served inline on the connection path.
            let tq = glommio::executor().create_task_queue(
                glommio::Shares::Static(MEMBERSHIP_TASK_SHARES),
                glommio::Latency::NotImportant,
                "membership",
            );
            if let Some(fd) = s.metrics_fd {
                // SAFETY: a bound, listening socket made in `run`, owned by nobody else.
                let l = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                let served =
                    glommio::spawn_local_into(crate::server::metrics::serve(ctx.clone(), l), tq);
                if let Ok(t) = served {
                    t.detach();
                }
            }
            if let Ok(t) = glommio::spawn_local_into(
                crate::server::cluster::anti_entropy::run(ctx.clone()),
                tq,
            ) {
                t.detach();
            }
            glommio::spawn_local_into(crate::server::cluster::gossip::run(ctx.clone(), g), tq)
        })
        .transpose()
        .map_err(|e| core_err(ctx.core, e))?;
    let background = glommio::executor().create_task_queue(
        glommio::Shares::Static(COMPACTION_TASK_SHARES),
        glommio::Latency::NotImportant,
        "background",
    );
    let compactor = glommio::spawn_local_into(compactor::run(ctx.clone()), background)
        .map_err(|e| core_err(ctx.core, e))?;
    let handoff = glommio::spawn_local_into(handoff::run(ctx.clone()), background)
        .map_err(|e| core_err(ctx.core, e))?;
    let expiry =
        glommio::spawn_local_into(crate::server::data::expiry::run(ctx.clone()), background)
            .map_err(|e| core_err(ctx.core, e))?;
    let scrub_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(SCRUB_TASK_SHARES),
        glommio::Latency::NotImportant,
        "scrub",
    );
    let scrubber =
        glommio::spawn_local_into(crate::server::data::scrubber::run(ctx.clone()), scrub_queue)
            .map_err(|e| core_err(ctx.core, e))?;
    ctx.shutdown.wait().await;
    compactor.await;
    scrubber.await;
    handoff.await;
    expiry.await;
    if let Some(a) = acceptor {
        a.await;
    }
    if let Some(m) = membership {
        m.await;
    }
    reaper.await;
    ctx.connections_changed
        .wait_until(|| ctx.connections.get() == 0)
        .await;
    for p in &ctx.peers {
        let _ = p.send_async(CoreMsg::Drained { from: ctx.core }).await;
    }
    mailbox.await;
    wal.shut_down();
    flusher.await?;
    let (messages, groups) = ctx.hops.counts();
    log::debug!(
        "core {}: stopped ({messages} hop messages carried {groups} groups)",
        ctx.core
    );
    Ok(())
}

fn core_err(core: usize, e: impl std::fmt::Display) -> Error {
    Error::Core {
        core,
        cause: e.to_string(),
    }
}

/// Write the whole map, every hint held and every consensus state into this core's fresh
/// segment and wait until it is synced.
async fn snapshot(
    map: &Map,
    hints: &HintStore,
    acceptors: &AcceptorStore,
    wal: &Rc<Wal>,
) -> Result<(), Error> {
    for (target, key, value, version) in hints.iter() {
        let (kind, field) = crate::storage::hints::record(target, key, value);
        wal.append(kind, version, &field, value.unwrap_or_default());
    }
    for (key, (version, state)) in acceptors.records() {
        wal.append(Kind::Paxos, version, key, &state);
    }
    let mut since_wait = 0usize;
    for (key, value, version) in map.iter() {
        let (kind, value) = match value {
            Some(v) => (Kind::Put, v),
            None => (Kind::Tombstone, &[][..]),
        };
        wal.append(kind, version, key, value);
        since_wait += key.len() + value.len();
        if since_wait >= WAL_GROUP_BYTES_MAX {
            since_wait = 0;
            wal.durable(wal.last_ticket()).await?;
        }
    }
    // Every chain has at least this record: replay tells a complete start snapshot by it.
    wal.mark_snapshotted(wal.chain_first());
    wal.synced(wal.last_ticket()).await?;
    Ok(())
}

/// Delete the replayed segments: every core's snapshot now holds what they held.
fn remove_superseded(old: &[SegmentFile], data_dir: &std::path::Path) -> Result<(), Error> {
    let mut dirs = std::collections::BTreeSet::new();
    for seg in old {
        std::fs::remove_file(&seg.path).map_err(|e| crate::storage::Error::io(&seg.path, e))?;
        if let Some(d) = seg.path.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        recovery::sync_dir(&d)?;
    }
    if !old.is_empty() {
        recovery::sync_dir(data_dir)?;
        log::info!(
            "removed {} replayed segments (superseded by snapshots)",
            old.len()
        );
    }
    Ok(())
}

/// This core's inbox: operations from other cores, connections, stats, shutdown.
async fn mailbox(ctx: Rc<CoreCtx>, rx: flume::Receiver<CoreMsg>) {
    let cores = ctx.node.cores;
    while ctx.drained.get() < cores {
        let Ok(msg) = rx.recv_async().await else {
            break;
        };
        match msg {
            CoreMsg::Ops { ops, reply } => execute_remote(&ctx, ops, reply),
            CoreMsg::Conn { stream, over_limit } => {
                let stream = stream.bind_to_executor();
                // Over --max-connections: only in the slot of an unauthenticated connection.
                if over_limit && !ctx.admission.evict_oldest() {
                    log::warn!(
                        "connection limit {} reached, every slot authenticated: closing a new \
                         connection",
                        ctx.node.max_connections
                    );
                    ctx.node
                        .connections
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                ctx.connection_opened();
                let c = ctx.clone();
                glommio::spawn_local(async move {
                    crate::server::front::connection::serve(&c, stream).await;
                    c.connection_closed();
                })
                .detach();
            }
            CoreMsg::Metrics { reply } => {
                let _ = reply.try_send(ctx.metrics_snapshot());
            }
            CoreMsg::Stats { reply } => {
                let _ = reply.try_send(ctx.shard.stats(ctx.connections.get()));
            }
            CoreMsg::Scrub { reply } => {
                let c = ctx.clone();
                glommio::spawn_local(async move {
                    let _ = reply
                        .send_async(crate::server::data::scrubber::pass(&c).await)
                        .await;
                })
                .detach();
            }
            CoreMsg::Shutdown => ctx.shutdown.set(),
            CoreMsg::Ring(view) => *ctx.view.borrow_mut() = view,
            CoreMsg::Gossip {
                from,
                updates,
                reply,
            } => {
                let snapshot = match &ctx.gossip {
                    Some(g) => g.merge(&ctx, &updates, Some(&from)),
                    None => Vec::new(),
                };
                let _ = reply.try_send(snapshot);
            }
            CoreMsg::ClockReading { reply } => {
                let _ = reply.try_send(ctx.shard.clock_reading());
            }
            CoreMsg::Propose {
                key,
                command,
                reply,
            } => {
                let c = ctx.clone();
                glommio::spawn_local(async move {
                    let r = crate::server::data::consensus::enqueue(&c, key, command).await;
                    let _ = reply.send_async(r).await;
                })
                .detach();
            }
            CoreMsg::FlushBelow { floor, reply } => {
                let _ = reply.try_send(ctx.shard.flush_below(floor));
            }
            CoreMsg::RangeKeys { lo, hi, reply } => {
                let _ = reply.try_send(ctx.shard.range_keys(lo, hi));
            }
            CoreMsg::AeTree { peer, reply } => {
                let _ = reply.try_send(ctx.shard.ae_tree(&ctx.view(), &peer));
            }
            CoreMsg::AeEntries {
                peer,
                leaves,
                reply,
            } => {
                let _ = reply.try_send(ctx.shard.ae_entries(&ctx.view(), &peer, &leaves));
            }
            CoreMsg::Stream { only, reply } => {
                let c = ctx.clone();
                glommio::spawn_local(async move {
                    let r =
                        crate::server::cluster::topology::stream_core(&c, only.as_deref()).await;
                    let _ = reply.try_send(r);
                })
                .detach();
            }
            CoreMsg::Forget { reply } => {
                let c = ctx.clone();
                glommio::spawn_local(async move {
                    let _ = reply.try_send(crate::server::cluster::topology::forget_core(&c).await);
                })
                .detach();
            }
            CoreMsg::Leave { reply } => {
                if let Some(g) = ctx.gossip.clone() {
                    let c = ctx.clone();
                    glommio::spawn_local(async move {
                        let _ =
                            reply.try_send(crate::server::cluster::topology::leave(&c, &g).await);
                    })
                    .detach();
                }
            }
            CoreMsg::PingReq { target, reply } => {
                if let Some(g) = ctx.gossip.clone() {
                    let c = ctx.clone();
                    glommio::spawn_local(async move {
                        let _ = reply.try_send(g.probe_for(&c, &target).await);
                    })
                    .detach();
                }
            }
            CoreMsg::Drained { from } => {
                log::debug!("core {}: core {from} drained", ctx.core);
                ctx.drained.set(ctx.drained.get() + 1);
            }
        }
    }
}

/// Execute a batch sent by another core; answer once its writes are durable.
fn execute_remote(
    ctx: &Rc<CoreCtx>,
    ops: Vec<crate::server::data::messages::Op>,
    reply: flume::Sender<Vec<OpResult>>,
) {
    let mut results = Vec::with_capacity(ops.len());
    let mut logged = Vec::with_capacity(ops.len());
    let mut last_ticket = None;
    for op in &ops {
        let (result, ticket) = ctx.shard.execute(op.as_ref());
        results.push(result);
        logged.push(ticket.is_some());
        last_ticket = ticket.or(last_ticket);
    }
    let Some(ticket) = last_ticket else {
        let _ = reply.try_send(results);
        return;
    };
    // every answer that waited on the log fails with it (a write, a consensus state)
    let fail = move |results: &mut Vec<OpResult>, e: &crate::storage::Error| {
        for (r, logged) in results.iter_mut().zip(logged) {
            if logged || matches!(r, OpResult::Written { .. }) {
                *r = storage_failure(e);
            }
        }
    };
    let durable = ctx.shard.wal.durable(ticket);
    // Staged (the default mode) means durable already: answer in this turn, no task.
    match durable.now() {
        Some(done) => {
            if let Err(e) = done {
                fail(&mut results, &e);
            }
            let _ = reply.try_send(results);
        }
        None => {
            glommio::spawn_local(async move {
                if let Err(e) = durable.await {
                    fail(&mut results, &e);
                }
                let _ = reply.try_send(results);
            })
            .detach();
        }
    }
}

/// Bind the listening socket without SO_REUSEPORT, so a taken port is an error.
///
/// EADDRINUSE has two causes: a live node or other program (refuse), or a process that just
/// died: its io_uring is torn down asynchronously and keeps the listening socket open for a
/// moment after the process is gone. A live node answers PING, so refuse at once when one does;
/// otherwise retry for up to `BIND_RETRY_MS` before refusing.
fn bind_exclusive(addr: std::net::SocketAddr) -> Result<RawFd, Error> {
    let deadline = Instant::now() + std::time::Duration::from_millis(BIND_RETRY_MS);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l.into_raw_fd()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let probe = std::time::Duration::from_millis(BIND_PROBE_TIMEOUT_MS);
                let live_node = crate::client::Client::connect(&addr.to_string(), probe)
                    .and_then(|mut c| c.ping())
                    .is_ok();
                if live_node || Instant::now() >= deadline {
                    return Err(Error::PortInUse { addr });
                }
                log::info!("port {addr} still held (a process that just exited?); retrying");
                std::thread::sleep(std::time::Duration::from_millis(BIND_RETRY_PAUSE_MS));
            }
            Err(source) => return Err(Error::Listen { addr, source }),
        }
    }
}

/// Raise the open-files limit to fit the connection limit (plus WAL files and peers).
fn raise_nofile_limit(connections: usize) {
    let want = (connections + 1024) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= want {
            return;
        }
        let new = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            log::warn!("could not raise RLIMIT_NOFILE to {want}");
        } else if new.rlim_cur < want {
            log::warn!("RLIMIT_NOFILE hard limit {} is below {want}", lim.rlim_max);
        }
    }
}

/// SIGTERM / SIGINT start a clean shutdown; a second signal exits at once.
fn spawn_signal_thread(cores: Vec<flume::Sender<CoreMsg>>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("kv-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    log::warn!("second signal {sig}: exiting now");
                    std::process::exit(1);
                }
                log::info!("signal {sig}: shutting down");
                for c in &cores {
                    let _ = c.send(CoreMsg::Shutdown);
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the signal thread: {e}");
    }
}
