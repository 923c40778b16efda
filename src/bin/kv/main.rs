//! `kv`: the command-line client (put/get/delete/ping/info, a REPL, and `kv bench`).
//!
//! Exit codes: 0 ok, 1 not found, 2 cannot connect or timed out, 3 error reply, 64 usage.

mod bench;
mod bench_conn;
mod check;
mod check_collection;
mod check_consensus;
mod history;
mod repl;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kvstore::client::{Client, Error};
use kvstore::limits::CLIENT_TIMEOUT_MS_DEFAULT;

pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 2;
pub const EXIT_ERROR_REPLY: u8 = 3;
pub const EXIT_USAGE: u8 = 64;

#[derive(Parser, Debug)]
#[command(name = "kv", version, about = "kvstore client")]
struct Cli {
    #[arg(long, env = "KV_HOST", default_value = "127.0.0.1", global = true)]
    host: String,
    #[arg(long, env = "KV_PORT", default_value_t = 7001, global = true)]
    port: u16,
    /// File holding the node's password (else `KVSTORE_PASSWORD`): every connection sends AUTH.
    #[arg(long, global = true)]
    password_file: Option<std::path::PathBuf>,
    /// The user to authenticate as: `default`, or `reader` (the node's read-only user).
    #[arg(long, global = true, env = "KVSTORE_USER")]
    user: Option<String>,
    /// Connect with TLS, trusting this CA certificate (PEM) for the node's certificate.
    #[arg(long, env = "KV_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: present this client certificate (PEM) to a node that asks for one.
    #[arg(long, env = "KV_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "KV_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Timeout for connecting and for each reply (ms).
    #[arg(long, default_value_t = CLIENT_TIMEOUT_MS_DEFAULT, global = true)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY.
    Put {
        key: String,
        value: String,
        /// Expire the key this many seconds from now.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        ttl: Option<u64>,
    },
    /// Print the value of KEY.
    Get {
        key: String,
        /// Read only the contacted node's own store (no quorum, no repair).
        #[arg(long)]
        local: bool,
    },
    /// Delete KEY (OK also when it was missing).
    Delete { key: String },
    /// Check the node answers.
    Ping,
    /// Node and per-core facts.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Closed-loop load generator with latency histograms.
    Bench(bench::BenchArgs),
    /// Make the node stream its data to the rest of the cluster, leave it and exit.
    Leave,
    /// Drive a workload through every node and check the history: no acknowledged write
    /// lost, no stale read, no value nobody wrote (exit 1 on a violation).
    Check(check::CheckArgs),
    /// Run an anti-entropy round with every live member now and print what it fixed.
    Repair {
        #[arg(long)]
        json: bool,
    },
    /// Verify every sealed WAL segment of the node now (the background scrub, at once) and
    /// print what it found; exit 3 if it found damage.
    Scrub {
        #[arg(long)]
        json: bool,
    },
    /// Print every key in the cluster (matching a Redis glob), one per line, as SCAN walks it.
    Scan {
        /// Only keys matching this glob (`*`, `?`, `[a-z]`).
        #[arg(long = "match", value_name = "GLOB")]
        pattern: Option<String>,
        /// Keys asked for per SCAN step.
        #[arg(long, default_value_t = 1000)]
        count: u32,
    },
}

/// `kv leave` waits for the whole hand-over (the node bounds each step itself).
const LEAVE_TIMEOUT_MS: u64 = 15 * 60 * 1000;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(user) = &cli.user {
        kvstore::client::set_user(user.clone().into_bytes());
    }
    match kvstore::server::front::auth::load(
        "password",
        cli.password_file.as_deref(),
        std::env::var("KVSTORE_PASSWORD").ok(),
    ) {
        Ok(Some(p)) => kvstore::client::set_password(p),
        Ok(None) => {}
        Err(e) => {
            eprintln!("kv: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if let Some(ca) = &cli.tls_ca {
        let identity = cli.tls_cert.as_deref().zip(cli.tls_key.as_deref());
        if let Err(e) = kvstore::client::set_tls_with(ca, identity) {
            eprintln!("kv: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let addr = format!("{}:{}", cli.host, cli.port);
    let timeout = Duration::from_millis(cli.timeout_ms);
    let Some(command) = cli.command else {
        if std::io::stdin().is_terminal() {
            return ExitCode::from(repl::run(&addr, timeout));
        }
        eprintln!("kv: no command given (run `kv --help`)");
        return ExitCode::from(EXIT_USAGE);
    };
    if let Command::Bench(args) = command {
        return ExitCode::from(bench::run(&addr, timeout, &args));
    }
    if let Command::Check(args) = command {
        return ExitCode::from(check::run(&addr, timeout, &args));
    }
    let timeout = if matches!(
        command,
        Command::Leave | Command::Repair { .. } | Command::Scrub { .. }
    ) {
        timeout.max(Duration::from_millis(LEAVE_TIMEOUT_MS))
    } else {
        timeout
    };
    let code = match Client::connect(&addr, timeout) {
        Ok(mut client) => run_command(&mut client, command),
        Err(e) => report(&e),
    };
    ExitCode::from(code)
}

fn run_command(client: &mut Client, command: Command) -> u8 {
    let result = match command {
        Command::Put { key, value, ttl } => {
            let put = match ttl {
                Some(s) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    let at = now.saturating_add(s.saturating_mul(1000));
                    client.put_expiring(key.as_bytes(), value.as_bytes(), at)
                }
                None => client.put(key.as_bytes(), value.as_bytes()),
            };
            put.map(|_| {
                println!("OK");
                0
            })
        }
        Command::Get { key, local } => {
            let got = if local {
                client.get_local(key.as_bytes())
            } else {
                client.get(key.as_bytes())
            };
            got.map(|v| match v {
                Some(v) => {
                    println!("{}", String::from_utf8_lossy(&v));
                    0
                }
                None => {
                    eprintln!("not found");
                    EXIT_NOT_FOUND
                }
            })
        }
        Command::Delete { key } => client.delete(key.as_bytes()).map(|_| {
            println!("OK");
            0
        }),
        Command::Ping => client.ping().map(|_| {
            println!("PONG");
            0
        }),
        Command::Info { json } => client.info().map(|info| {
            if json {
                println!("{info}");
            } else {
                print!("{}", format_info(&info));
            }
            0
        }),
        Command::Leave => client.leave().map(|n| {
            println!("LEFT (streamed {n} records)");
            0
        }),
        Command::Scan { pattern, count } => {
            let pattern = pattern.unwrap_or_default();
            let mut cursor = 0;
            loop {
                match client.scan(cursor, count, pattern.as_bytes()) {
                    Ok((next, keys)) => {
                        for k in keys {
                            println!("{}", String::from_utf8_lossy(&k));
                        }
                        if next == 0 {
                            break Ok(0);
                        }
                        cursor = next;
                    }
                    Err(e) => break Err(e),
                }
            }
        }
        Command::Scrub { json } => client.scrub().map(|r| {
            if json {
                println!("{r}");
            } else {
                println!(
                    "scrubbed {} segments ({} bytes): {} damaged",
                    r["segments"], r["bytes"], r["damaged_segments"]
                );
                for f in r["findings"].as_array().into_iter().flatten() {
                    println!("  {}", f.as_str().unwrap_or("?"));
                }
            }
            if r["damaged_segments"].as_u64().unwrap_or(0) > 0 {
                EXIT_ERROR_REPLY
            } else {
                0
            }
        }),
        Command::Repair { json } => client.repair().map(|r| {
            if json {
                println!("{r}");
            } else {
                println!(
                    "repaired with {} peers ({} equal, {} failed): {} leaves differed, {} keys \
                     compared, {} pulled, {} pushed",
                    r["peers"],
                    r["peers_equal"],
                    r["peers_failed"],
                    r["leaves_differing"],
                    r["keys_compared"],
                    r["keys_pulled"],
                    r["keys_pushed"]
                );
            }
            u8::from(r["peers_failed"].as_u64().unwrap_or(0) > 0)
        }),
        Command::Bench(_) | Command::Check(_) => Ok(EXIT_USAGE),
    };
    result.unwrap_or_else(|e| report(&e))
}

/// Print an error and return its exit code.
pub fn report(e: &Error) -> u8 {
    eprintln!("kv: {e}");
    if e.is_unreachable() {
        EXIT_UNREACHABLE
    } else {
        EXIT_ERROR_REPLY
    }
}

/// `kv info` lines: `node <id> <host:port> cores=<n> uptime_s=<n> used_memory=<bytes>
/// max_memory=<bytes, 0: off>`, then one per core.
pub fn format_info(info: &serde_json::Value) -> String {
    let mut s = format!(
        "node {} {} cores={} uptime_s={} used_memory={} max_memory={}\n",
        info["node_id"].as_str().unwrap_or("?"),
        info["addr"].as_str().unwrap_or("?"),
        info["cores"],
        info["uptime_s"],
        info["used_memory"],
        info["max_memory"]
    );
    if let Some(cores) = info["core_stats"].as_array() {
        for c in cores {
            s.push_str(&format!(
                "core {} keys={} memory_bytes={} wal_bytes={}\n",
                c["core"], c["keys"], c["memory_bytes"], c["wal_bytes"]
            ));
        }
    }
    let w = &info["wal_health"];
    if w.is_object() {
        s.push_str(&format!(
            "wal repair_pending={} damaged_segments={} records_lost={} unknown_losses={} \
             torn_tails={} scrub_passes={} scrub_bytes={} scrub_damaged_segments={}\n",
            w["repair_pending"],
            w["damaged_segments"],
            w["records_lost"],
            w["unknown_losses"],
            w["torn_tails"],
            w["scrub_passes"],
            w["scrub_bytes"],
            w["scrub_damaged_segments"]
        ));
        for f in w["findings"].as_array().into_iter().flatten() {
            s.push_str(&format!("wal_finding {}\n", f.as_str().unwrap_or("?")));
        }
    }
    let c = &info["clock"];
    if c.is_object() {
        let peers: Vec<String> = c["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}:{}±{}",
                    p["peer"].as_str().unwrap_or("?"),
                    p["ahead_ms"],
                    p["error_ms"]
                )
            })
            .collect();
        s.push_str(&format!(
            "clock fenced={} offset_ms={} max_offset_ms={} peers={}\n",
            c["fenced"],
            c["ahead_ms"],
            c["bound_ms"],
            peers.join(",")
        ));
    }
    if let Some(members) = info["members"].as_array() {
        for m in members {
            // A ring role other than plain membership (joining, leaving, waiting) is appended.
            let role = match m["role"].as_str() {
                Some(r) if r != "member" => format!(" role={r}"),
                _ => String::new(),
            };
            s.push_str(&format!(
                "member {} {} {} inc={}{role}\n",
                m["id"].as_str().unwrap_or("?"),
                m["addr"].as_str().unwrap_or("?"),
                m["status"].as_str().unwrap_or("?"),
                m["incarnation"]
            ));
        }
    }
    s
}
