//! The original C++ design's client protocol as a front (see `wire::original` for the bytes).
//!
//! Owns: mapping its PUT/GET/DELETE/CLUSTER_INFO onto our operations and building its
//! responses. Never touches storage or the network itself: requests take the same coordinator
//! path (quorum, versions, read repair) as the native and Redis protocols.
//!
//! Meanings chosen where the original is silent: DELETE of a key that was not live answers
//! NOT_FOUND; GET's timestamp is the physical milliseconds of the stored version's hybrid
//! logical clock and its coordinator the member whose writer id issued it.

use crate::core::membership::Status as MemberStatus;
use crate::core::version::{writer_id, Version};
use crate::server::cluster::view::RingView;
use crate::server::data::messages::OpResult;
use crate::server::front::connection::{Front, ReplyCtx};
use crate::server::wall_clock_ms;
use crate::wire::native::{Opcode, Request as NativeRequest};
use crate::wire::original::{
    self, DecodeError, Request, ResponseWriter, STATUS_NOT_FOUND, STATUS_OK,
};

pub struct OriginalFront;

pub enum OriginalReply {
    Get,
    Put,
    Delete,
    ClusterInfo,
    Invalid(String),
}

/// The member whose writer id issued `version` (writer ids keep the node hash in the upper 24
/// bits), or the writer id in hex when no current member matches.
pub fn coordinator_of(view: &RingView, version: Version) -> String {
    let node_bits = version.writer & 0xFFFF_FF00;
    view.listing
        .iter()
        .find(|u| writer_id(&u.id, 0) & 0xFFFF_FF00 == node_bits)
        .map(|u| u.id.clone())
        .unwrap_or_else(|| format!("writer-{:08x}", version.writer))
}

/// `host:port` split at the last colon (a port that does not parse is 0).
fn host_port(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']), p.parse().unwrap_or(0)),
        None => (addr, 0),
    }
}

impl Front for OriginalFront {
    type Reply = OriginalReply;
    type Fatal = DecodeError;

    fn decode(
        &mut self,
        buf: &[u8],
        max_value_bytes: usize,
        sink: &mut dyn FnMut(NativeRequest<'_>),
    ) -> Result<Option<(OriginalReply, usize)>, DecodeError> {
        let Some((req, used)) = original::decode_request(buf, max_value_bytes)? else {
            return Ok(None);
        };
        let reply = match req {
            Request::Put { key, value } => {
                sink(NativeRequest::new(Opcode::Put, key, value));
                OriginalReply::Put
            }
            Request::Get { key } => {
                sink(NativeRequest::new(Opcode::Get, key, &[]));
                OriginalReply::Get
            }
            Request::Delete { key } => {
                sink(NativeRequest::new(Opcode::Delete, key, &[]));
                OriginalReply::Delete
            }
            Request::ClusterInfo => OriginalReply::ClusterInfo,
            Request::Invalid(message) => OriginalReply::Invalid(message),
        };
        Ok(Some((reply, used)))
    }

    fn complete(&self, buf: &[u8], max_value_bytes: usize) -> bool {
        !matches!(original::decode_request(buf, max_value_bytes), Ok(None))
    }

    fn needs_report(reply: &OriginalReply) -> bool {
        matches!(reply, OriginalReply::ClusterInfo)
    }

    fn encode(
        &mut self,
        out: &mut Vec<u8>,
        reply: OriginalReply,
        results: &mut [OpResult],
        cx: &ReplyCtx<'_>,
    ) -> bool {
        let result = results.first();
        if let Some(OpResult::Failed { message, .. }) = result {
            original::encode_error(out, message);
            return false;
        }
        match reply {
            OriginalReply::Invalid(message) => original::encode_error(out, &message),
            OriginalReply::Get => match result.map(|r| r.live_cell(wall_clock_ms())) {
                Some(Ok(Some((cell, version)))) => {
                    let mut w = ResponseWriter::new(out, STATUS_OK);
                    w.string(cell.value)
                        .u64(version.physical_ms())
                        .string(coordinator_of(cx.view, version).as_bytes());
                    w.finish();
                }
                Some(Err(e)) => original::encode_error(out, &e.to_string()),
                _ => ResponseWriter::new(out, STATUS_NOT_FOUND).finish(),
            },
            OriginalReply::Put => ResponseWriter::new(out, STATUS_OK).finish(),
            OriginalReply::Delete => {
                let live = matches!(result, Some(OpResult::Written { was_live: true, .. }));
                let status = if live { STATUS_OK } else { STATUS_NOT_FOUND };
                ResponseWriter::new(out, status).finish();
            }
            OriginalReply::ClusterInfo => {
                let members: Vec<_> = cx
                    .view
                    .listing
                    .iter()
                    .filter(|u| u.status != MemberStatus::Left)
                    .collect();
                let mut w = ResponseWriter::new(out, STATUS_OK);
                w.u32(members.len() as u32);
                for u in members {
                    let (host, port) = host_port(&u.addr);
                    w.string(u.id.as_bytes())
                        .string(host.as_bytes())
                        .u16(port)
                        .u8(u8::from(u.status == MemberStatus::Alive));
                }
                w.u64(cx.report.map(|r| r.keys()).unwrap_or(0) as u64);
                w.finish();
            }
        }
        false
    }

    fn encode_fatal(&self, out: &mut Vec<u8>, e: &DecodeError) {
        original::encode_error(out, &e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::quorum::Replication;

    #[test]
    fn a_version_names_the_member_that_issued_it() {
        let view = RingView::solo(
            "node1",
            "127.0.0.1:7001",
            Replication::new(1, 1, 1).unwrap(),
        );
        let v = Version {
            hlc: 5 << 16,
            writer: writer_id("node1", 3),
        };
        assert_eq!(coordinator_of(&view, v), "node1");
        let other = Version {
            hlc: 5 << 16,
            writer: writer_id("elsewhere", 0),
        };
        assert!(coordinator_of(&view, other).starts_with("writer-"));
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(host_port("127.0.0.1:7001"), ("127.0.0.1", 7001));
        assert_eq!(host_port("node1:7001"), ("node1", 7001));
        assert_eq!(host_port("[::1]:7001"), ("::1", 7001));
        assert_eq!(host_port("nohost"), ("nohost", 0));
    }
}
