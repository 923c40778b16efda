//! The interactive shell: `kvstore> put/get/delete/info/help/quit`, with history and editing.

use std::time::Duration;

use kvstore::client::Client;
use rustyline::error::ReadlineError;

const HELP: &str = "commands: put KEY VALUE | get KEY | delete KEY | info | ping | help | quit";

pub fn run(addr: &str, timeout: Duration) -> u8 {
    let mut client = match Client::connect(addr, timeout) {
        Ok(c) => c,
        Err(e) => return crate::report(&e),
    };
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kv: cannot open the terminal: {e}");
            return crate::EXIT_USAGE;
        }
    };
    println!("connected to {addr}; {HELP}");
    loop {
        let line = match editor.readline("kvstore> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) | Err(ReadlineError::Eof) => return 0,
            Err(e) => {
                eprintln!("kv: {e}");
                return crate::EXIT_USAGE;
            }
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        let mut parts = line.splitn(3, ' ');
        let cmd = parts.next().unwrap_or("");
        let a = parts.next();
        let b = parts.next();
        let result = match (cmd, a, b) {
            ("quit" | "exit", _, _) => return 0,
            ("help", _, _) => Ok(HELP.to_string()),
            ("ping", _, _) => client.ping().map(|_| "PONG".to_string()),
            ("info", _, _) => client
                .info()
                .map(|i| crate::format_info(&i).trim_end().to_string()),
            ("put", Some(k), Some(v)) => {
                client.put(k.as_bytes(), v.as_bytes()).map(|_| "OK".into())
            }
            ("get", Some(k), None) => client.get(k.as_bytes()).map(|v| match v {
                Some(v) => String::from_utf8_lossy(&v).into_owned(),
                None => "not found".into(),
            }),
            ("delete", Some(k), None) => client.delete(k.as_bytes()).map(|_| "OK".into()),
            _ => Ok(format!("unknown or incomplete command; {HELP}")),
        };
        match result {
            Ok(s) => println!("{s}"),
            Err(e) => {
                println!("error: {e}");
                if e.is_unreachable() {
                    match Client::connect(addr, timeout) {
                        Ok(c) => client = c,
                        Err(e) => return crate::report(&e),
                    }
                }
            }
        }
    }
}
