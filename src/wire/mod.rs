//! Wire codecs. Pure: bytes in, frames out (and back). No sockets here.
//!
//! A connection's protocol is chosen by its first byte: `0xA7` native (this module's
//! `native`), `0x00` the original design's protocol, anything else RESP.

pub mod collection;
pub mod consensus;
pub mod native;
pub mod original;
pub mod resp;
pub mod scan;

/// First byte of every native frame (and so of a native connection).
pub const NATIVE_MAGIC: u8 = 0xA7;

/// The protocol a connection speaks, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Native,
    Original,
    Resp,
}

pub fn detect_protocol(first_byte: u8) -> Protocol {
    match first_byte {
        NATIVE_MAGIC => Protocol::Native,
        0x00 => Protocol::Original,
        _ => Protocol::Resp,
    }
}
