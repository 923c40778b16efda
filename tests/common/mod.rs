//! Shared helpers for integration tests: free ports, data dirs under `target/`, a node process
//! guard that kills on drop, the `kv` binary, and polling with deadlines (never blind sleeps).

#![allow(dead_code)]

pub mod resp;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use kvstore::client::Client;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// WAL segment size of test nodes (fits the largest record at the default value limit).
pub const TEST_SEGMENT_BYTES: &str = "2097152";

/// Generous: the CI machine has 2 loaded cores.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A free loopback port, never handed out twice in this test process: a test that kills a node
/// and restarts it on the same port must not find another test's node there.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
        let port = l.local_addr().expect("addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh data dir under target/ (a tmpfs /tmp would silently lose O_DIRECT).
pub fn data_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("it").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// Poll `f` until it returns `Some`, or fail after `deadline`.
pub fn poll<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= end {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

pub struct Node {
    pub port: u16,
    pub dir: PathBuf,
    pub id: String,
    pub child: Option<Child>,
    extra: Vec<String>,
    /// Extra environment for the process (e.g. libfaketime's).
    env: Vec<(String, String)>,
}

impl Node {
    /// Start a node and wait until it answers PING.
    pub fn start(id: &str, dir: &Path, extra: &[&str]) -> Result<Node, String> {
        Node::start_on(id, dir, free_port(), extra)
    }

    /// Start a node on a given port (a restart at the same address).
    pub fn start_on(id: &str, dir: &Path, port: u16, extra: &[&str]) -> Result<Node, String> {
        Node::start_with_env(id, dir, port, extra, &[])
    }

    /// `start_on` with extra environment variables for the node process.
    pub fn start_with_env(
        id: &str,
        dir: &Path,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        let mut node = Node {
            port,
            dir: dir.to_path_buf(),
            id: id.to_string(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.spawn()?;
        Ok(node)
    }

    pub fn spawn(&mut self) -> Result<(), String> {
        // Small WAL segments unless the test sets its own: every node preallocates two per
        // core, and 64 MiB ones made a full test run take 20 GB of disk.
        let small = (!self.extra.iter().any(|a| a == "--wal-segment-bytes"))
            .then_some(["--wal-segment-bytes", TEST_SEGMENT_BYTES]);
        let child = Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
            .args(["--node-id", &self.id, "--port", &self.port.to_string()])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(small.iter().flatten())
            .args(&self.extra)
            // KV_TEST_RUST_LOG=debug shows the nodes' own logs when a test fails.
            .env(
                "RUST_LOG",
                std::env::var("KV_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn kvstore-node: {e}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Poll until the node answers PING; fail early if the process exits.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let addr = self.addr();
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("node exited during start: {status}"));
                }
            }
            if let Ok(mut c) = Client::connect(&addr, Duration::from_secs(2)) {
                if c.ping().is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() >= end {
                return Err(format!("node on {addr} not ready after {START_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr(), CLIENT_TIMEOUT).expect("connect")
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus, String> {
        let mut c = self.child.take().ok_or("not running")?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let status = poll("node to exit after SIGTERM", START_DEADLINE, || {
            c.try_wait().ok().flatten()
        });
        if status.is_err() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }

    pub fn kv(&self, args: &[&str]) -> Output {
        kv(&self.port.to_string(), args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Run the `kv` binary against `port`.
pub fn kv(port: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["--port", port, "--timeout-ms", "20000"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kv")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---- clusters ----

pub const SUSPECT_MS: &str = "1500";

/// libfaketime's preload library, if installed (Debian's `faketime`); under CI its absence is
/// an error.
pub fn faketime_lib() -> Result<Option<String>, String> {
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ] {
        let lib = format!("{dir}/faketime/libfaketimeMT.so.1");
        if std::path::Path::new(&lib).exists() {
            return Ok(Some(lib));
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return Err("libfaketime is required under CI (.ci/run installs faketime)".into());
    }
    eprintln!("skipping: libfaketime (Debian's faketime) is not installed");
    Ok(None)
}

/// A one-core member joining through `seed`, with the tests' suspect timeout.
pub fn member_args(seed: &str) -> [&str; 6] {
    [
        "--cores",
        "1",
        "--suspect-timeout-ms",
        SUSPECT_MS,
        "--seed",
        seed,
    ]
}

/// Start `n` nodes seeded from the first; wait until every node sees all of them ALIVE.
pub fn cluster(name: &str, n: usize, extra: &[&str]) -> Result<Vec<Node>, String> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=n {
        let dir = data_dir(&format!("{name}-n{i}"));
        let seed = nodes.first().map(|s| s.addr());
        let mut args = match &seed {
            Some(s) => member_args(s).to_vec(),
            None => vec!["--cores", "1", "--suspect-timeout-ms", SUSPECT_MS],
        };
        args.extend_from_slice(extra);
        nodes.push(Node::start(&format!("node{i}"), &dir, &args)?);
    }
    for node in &nodes {
        wait_members(node, n, "ALIVE")?;
    }
    Ok(nodes)
}

pub fn member_lines(node: &Node) -> Vec<String> {
    stdout(&node.kv(&["info"]))
        .lines()
        .filter(|l| l.starts_with("member "))
        .map(String::from)
        .collect()
}

pub fn wait_members(node: &Node, count: usize, status: &str) -> Result<(), String> {
    poll(
        &format!("{count} {status} members on {}", node.id),
        START_DEADLINE,
        || {
            let lines = member_lines(node);
            // A member line ends with ` role=...` while it is joining, leaving or waiting.
            (lines
                .iter()
                .filter(|l| l.split_whitespace().nth(3) == Some(status) && !l.contains(" role="))
                .count()
                == count)
                .then_some(())
        },
    )
}

/// The hints a node holds, over all its cores (`kv info --json`).
pub fn hints_held(node: &Node) -> Option<u64> {
    let info: serde_json::Value =
        serde_json::from_str(&stdout(&node.kv(&["info", "--json"]))).ok()?;
    info["core_stats"]
        .as_array()?
        .iter()
        .map(|c| c["hints"].as_u64())
        .sum()
}

pub fn member_status(node: &Node, id: &str) -> Option<String> {
    member_lines(node)
        .into_iter()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .and_then(|l| l.split_whitespace().nth(3).map(String::from))
}

pub fn local(node: &Node, key: &str) -> Option<String> {
    let o = node.kv(&["get", "--local", key]);
    (o.status.code() == Some(0)).then(|| stdout(&o).trim_end().to_string())
}

/// Whether `tool` can run here; under CI its absence is an error.
pub fn have(tool: &str, probe: &[&str]) -> Result<bool, String> {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
        return Err(format!("{tool} is required under CI (.ci/run installs it)"));
    }
    if !ok {
        eprintln!("skipping: {tool} is not installed");
    }
    Ok(ok)
}
