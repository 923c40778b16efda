//! The client-facing side of a node: accepting connections, serving the three protocols on one
//! port (plain or TLS), and deciding who may ask what. Never decides where a key lives or which
//! version wins: key operations go to `data` (the shard or the coordinator).

pub mod admission;
pub mod auth;
pub mod connection;
pub mod deadline;
pub mod listener;
pub mod original_front;
pub mod reply_budget;
pub mod resp_collection;
pub mod resp_conditional;
pub mod resp_expiry;
pub mod resp_front;
pub mod resp_hash;
pub mod resp_keyspace;
pub mod resp_list;
pub mod resp_set;
pub mod resp_string;
pub mod resp_zset;
pub mod tls;
