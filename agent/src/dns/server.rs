//! The node-local DNS server's wire side: [`respond`] turns one query into
//! a reply, a "forward it" or nothing (pure, fuzzed), and [`serve`] runs
//! it on UDP and TCP.
//!
//! - Cluster names ([`super::zone`]) are answered authoritatively (AA,
//!   TTL [`TTL`]); negative answers carry the zone's SOA so resolvers
//!   cache them for [`TTL`] seconds. Other names go to the node's upstream
//!   resolvers (its `/etc/resolv.conf`), each tried for
//!   [`DnsSettings::forward_timeout`]; with none reachable the client gets
//!   SERVFAIL, and cluster names are answered all the same.
//! - UDP answers fit the client's size (512 bytes, or its EDNS size up to
//!   1,232): a larger one is sent truncated (TC) so that the client asks
//!   again over TCP.
//! - Never amplify, never panic: a packet that does not parse as a query
//!   gets no answer (or a FORMERR no longer than itself); responses are
//!   never answered; at most [`MAX_FORWARDS`] forwards and
//!   [`MAX_TCP`] TCP connections at once, the rest are dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::{RData, A, CNAME, OPT, PTR, SOA, SRV};
use simple_dns::{Name, Packet, PacketFlag, ResourceRecord, CLASS, OPCODE, QTYPE, RCODE, TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use super::zone::{self, Answer, QueryType, Record};
use crate::services::ServiceTable;
use crate::shutdown::Shutdown;

/// TTL of cluster records (CoreDNS' kubernetes plugin default).
pub const TTL: u32 = 5;
/// Largest UDP answer sent to an EDNS client.
pub const MAX_EDNS_PAYLOAD: u16 = 1232;
/// Forwards in flight at once; more queries for other names are dropped.
pub const MAX_FORWARDS: usize = 128;
/// TCP connections at once.
pub const MAX_TCP: usize = 32;
/// How long a TCP client may stay idle.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Where it listens (UDP and TCP).
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The node's resolvers for other names.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream may take.
    pub forward_timeout: Duration,
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not a cluster name: forward the query as it is.
    Forward,
    /// Send nothing.
    Drop,
}

/// The nameservers of a `resolv.conf` text (port 53), leaving out
/// `exclude` (the server's own address).
pub fn upstreams_from_resolv_conf(text: &str, exclude: Ipv4Addr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|address| address.parse::<std::net::IpAddr>().ok())
        .filter(|address| *address != std::net::IpAddr::V4(exclude))
        .map(|address| SocketAddr::new(address, 53))
        .collect()
}

fn query_type(qtype: QTYPE) -> QueryType {
    match qtype {
        QTYPE::TYPE(TYPE::A) => QueryType::A,
        QTYPE::TYPE(TYPE::SRV) => QueryType::Srv,
        QTYPE::TYPE(TYPE::PTR) => QueryType::Ptr,
        QTYPE::TYPE(TYPE::CNAME) => QueryType::Cname,
        QTYPE::ANY => QueryType::Any,
        _ => QueryType::Other,
    }
}

/// A header-only reply with `rcode` to the query whose first bytes are
/// `query` (`None` when it is shorter than a header).
fn header_only(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&header[..2]);
    // QR, the query's opcode and RD; RA; the rcode.
    out[2] = 0x80 | (header[2] & 0x79);
    out[3] = 0x80 | (rcode & 0x0f);
    Some(out)
}

fn record<'a>(record: &'a Record) -> Option<ResourceRecord<'a>> {
    let (name, rdata) = match record {
        Record::A { name, address } => (
            name,
            RData::A(A {
                address: u32::from(*address),
            }),
        ),
        Record::Srv {
            name,
            weight,
            port,
            target,
        } => (
            name,
            RData::SRV(SRV {
                priority: 0,
                weight: *weight,
                port: *port,
                target: Name::new(target).ok()?,
            }),
        ),
        Record::Cname { name, target } => (name, RData::CNAME(CNAME(Name::new(target).ok()?))),
        Record::Ptr { name, target } => (name, RData::PTR(PTR(Name::new(target).ok()?))),
    };
    Some(ResourceRecord::new(
        Name::new(name).ok()?,
        CLASS::IN,
        TTL,
        rdata,
    ))
}

/// The reply to `query` (one DNS message) from `services` in `domain`;
/// `udp` limits its size as UDP must.
pub fn respond(
    services: &[bramble_common::wire::WireService],
    domain: &str,
    query: &[u8],
    udp: bool,
) -> Reply {
    let Ok(packet) = Packet::parse(query) else {
        return header_only(query, 1).map_or(Reply::Drop, Reply::Answer);
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Reply::Drop;
    }
    if packet.opcode() != OPCODE::StandardQuery {
        return header_only(query, 4).map_or(Reply::Drop, Reply::Answer);
    }
    let [question] = packet.questions.as_slice() else {
        return header_only(query, 1).map_or(Reply::Drop, Reply::Answer);
    };
    let qname = question.qname.to_string();
    let answer = zone::answer(services, domain, &qname, query_type(question.qtype));
    let (rcode, answers, extra) = match &answer {
        Answer::NotOurs => return Reply::Forward,
        Answer::NxDomain => (RCODE::NameError, &[][..], &[][..]),
        Answer::NoData => (RCODE::NoError, &[][..], &[][..]),
        Answer::Records(answers, extra) => (RCODE::NoError, answers.as_slice(), extra.as_slice()),
    };
    let limit = if udp {
        packet
            .opt()
            .map_or(512, |opt| opt.udp_packet_size.clamp(512, MAX_EDNS_PAYLOAD))
    } else {
        u16::MAX
    };
    let build = |truncate: bool| -> Option<Vec<u8>> {
        let mut reply = Packet::new_reply(packet.id());
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
        if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
            reply.set_flags(PacketFlag::RECURSION_DESIRED);
        }
        *reply.rcode_mut() = rcode;
        reply.questions.push(question.clone());
        if packet.opt().is_some() {
            *reply.opt_mut() = Some(OPT {
                opt_codes: Vec::new(),
                udp_packet_size: MAX_EDNS_PAYLOAD,
                version: 0,
            });
        }
        if truncate {
            reply.set_flags(PacketFlag::TRUNCATION);
        } else {
            reply.answers.extend(answers.iter().filter_map(record));
            reply
                .additional_records
                .extend(extra.iter().filter_map(record));
            if answers.is_empty() {
                let zone = domain.trim_end_matches('.');
                let mname = format!("ns.dns.{zone}");
                let rname = format!("hostmaster.{zone}");
                if let (Ok(zone), Ok(mname), Ok(rname)) =
                    (Name::new(zone), Name::new(&mname), Name::new(&rname))
                {
                    let soa = SOA {
                        mname: mname.into_owned(),
                        rname: rname.into_owned(),
                        serial: 1,
                        refresh: 7200,
                        retry: 1800,
                        expire: 86400,
                        minimum: TTL,
                    };
                    reply.name_servers.push(
                        ResourceRecord::new(zone.into_owned(), CLASS::IN, TTL, RData::SOA(soa))
                            .into_owned(),
                    );
                }
            }
        }
        reply.build_bytes_vec_compressed().ok()
    };
    match build(false) {
        Some(bytes) if bytes.len() <= usize::from(limit) => Reply::Answer(bytes),
        Some(_) => build(true).map_or(Reply::Drop, Reply::Answer),
        None => header_only(query, 2).map_or(Reply::Drop, Reply::Answer),
    }
}

/// Asks the upstreams in turn; the first answer, or SERVFAIL.
async fn forward(query: &[u8], settings: &DnsSettings) -> Option<Vec<u8>> {
    for upstream in &settings.upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let id = query.get(..2);
        let deadline = tokio::time::Instant::now() + settings.forward_timeout;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            // Only the answer to this query (same id) counts.
            if n >= 12 && buf.get(..2) == id {
                buf.truncate(n);
                return Some(buf);
            }
        }
        debug!(%upstream, "upstream resolver did not answer in time");
    }
    header_only(query, 2)
}

async fn reply_for(
    query: &[u8],
    udp: bool,
    table: &watch::Receiver<Arc<ServiceTable>>,
    settings: &DnsSettings,
) -> Option<Vec<u8>> {
    let services: Vec<bramble_common::wire::WireService> =
        table.borrow().services().cloned().collect();
    match respond(&services, &settings.domain, query, udp) {
        Reply::Answer(bytes) => Some(bytes),
        Reply::Drop => None,
        Reply::Forward => forward(query, settings).await,
    }
}

/// Serves DNS on `settings.listen` (UDP and TCP) until `shutdown`,
/// answering from the latest `table`. Binding is retried every second
/// until the address exists (the pod bridge is made by the sync loop).
pub async fn serve(
    settings: DnsSettings,
    table: watch::Receiver<Arc<ServiceTable>>,
    mut shutdown: Shutdown,
) {
    let mut logged = false;
    let (udp, tcp) = loop {
        match (
            UdpSocket::bind(settings.listen).await,
            TcpListener::bind(settings.listen).await,
        ) {
            (Ok(udp), Ok(tcp)) => break (Arc::new(udp), tcp),
            (Err(e), _) | (_, Err(e)) => {
                if !logged {
                    warn!(listen = %settings.listen, error = %e, "cannot listen for DNS yet; retrying every second");
                    logged = true;
                }
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::info!(listen = %settings.listen, domain = %settings.domain, upstreams = ?settings.upstreams, "node-local DNS listening");
    let settings = Arc::new(settings);
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let connections = Arc::new(Semaphore::new(MAX_TCP));
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            received = udp.recv_from(&mut buf) => {
                let Ok((n, peer)) = received else { continue };
                let query = &buf[..n];
                let services: Vec<bramble_common::wire::WireService> =
                    table.borrow().services().cloned().collect();
                match respond(&services, &settings.domain, query, true) {
                    Reply::Answer(bytes) => {
                        let _ = udp.send_to(&bytes, peer).await;
                    }
                    Reply::Drop => {}
                    Reply::Forward => {
                        let Ok(permit) = Arc::clone(&forwards).try_acquire_owned() else {
                            continue;
                        };
                        let (udp, settings, query) = (Arc::clone(&udp), Arc::clone(&settings), query.to_vec());
                        tokio::spawn(async move {
                            if let Some(bytes) = forward(&query, &settings).await {
                                let _ = udp.send_to(&bytes, peer).await;
                            }
                            drop(permit);
                        });
                    }
                }
            }
            accepted = tcp.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                    continue;
                };
                let (table, settings) = (table.clone(), Arc::clone(&settings));
                tokio::spawn(async move {
                    serve_tcp(stream, &table, &settings).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn serve_tcp(
    mut stream: TcpStream,
    table: &watch::Receiver<Arc<ServiceTable>>,
    settings: &DnsSettings,
) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = reply_for(&query, false, table, settings).await else {
            return;
        };
        let Ok(size) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_all(&size.to_be_bytes()).await.is_err()
            || stream.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bramble_common::wire::{WireEndpoint, WireService, WireServiceType};
    use simple_dns::Question;

    fn query(name: &str, qtype: TYPE, edns: bool) -> Vec<u8> {
        let mut packet = Packet::new_query(7);
        packet.set_flags(PacketFlag::RECURSION_DESIRED);
        packet.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        if edns {
            *packet.opt_mut() = Some(OPT {
                opt_codes: Vec::new(),
                udp_packet_size: 4096,
                version: 0,
            });
        }
        packet.build_bytes_vec().unwrap()
    }

    fn services(endpoints: usize) -> Vec<WireService> {
        vec![WireService {
            namespace: "default".into(),
            name: "web".into(),
            type_: WireServiceType::Headless,
            endpoints: (0..endpoints)
                .map(|i| WireEndpoint {
                    address: format!("10.244.{}.{}", i / 200, i % 200 + 2),
                    ready: true,
                    ..WireEndpoint::default()
                })
                .collect(),
            ..WireService::default()
        }]
    }

    #[test]
    fn cluster_names_are_answered_and_others_forwarded() {
        let s = services(2);
        let Reply::Answer(bytes) = respond(
            &s,
            "cluster.local",
            &query("web.default.svc.cluster.local", TYPE::A, false),
            true,
        ) else {
            panic!()
        };
        let reply = Packet::parse(&bytes).unwrap();
        assert_eq!(reply.id(), 7);
        assert!(reply.has_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RESPONSE));
        assert_eq!(reply.answers.len(), 2);
        let Reply::Answer(bytes) = respond(
            &s,
            "cluster.local",
            &query("nope.default.svc.cluster.local", TYPE::A, false),
            true,
        ) else {
            panic!()
        };
        let reply = Packet::parse(&bytes).unwrap();
        assert_eq!(reply.rcode(), RCODE::NameError);
        assert_eq!(reply.name_servers.len(), 1, "SOA for negative caching");
        assert_eq!(
            respond(
                &s,
                "cluster.local",
                &query("example.com", TYPE::A, false),
                true
            ),
            Reply::Forward
        );
    }

    #[test]
    fn big_udp_answers_are_truncated_and_whole_over_tcp() {
        let s = services(100);
        let q = query("web.default.svc.cluster.local", TYPE::A, false);
        let Reply::Answer(udp) = respond(&s, "cluster.local", &q, true) else {
            panic!()
        };
        assert!(udp.len() <= 512);
        let reply = Packet::parse(&udp).unwrap();
        assert!(reply.has_flags(PacketFlag::TRUNCATION));
        assert!(reply.answers.is_empty());
        let Reply::Answer(edns) = respond(
            &s,
            "cluster.local",
            &query("web.default.svc.cluster.local", TYPE::A, true),
            true,
        ) else {
            panic!()
        };
        assert!(edns.len() <= usize::from(MAX_EDNS_PAYLOAD));
        let Reply::Answer(tcp) = respond(&s, "cluster.local", &q, false) else {
            panic!()
        };
        assert_eq!(Packet::parse(&tcp).unwrap().answers.len(), 100);
    }

    #[test]
    fn garbage_is_dropped_or_refused_without_amplification() {
        let s = services(1);
        assert_eq!(respond(&s, "cluster.local", b"", true), Reply::Drop);
        assert_eq!(
            respond(&s, "cluster.local", b"\x01\x02\x03", true),
            Reply::Drop
        );
        let junk = [0xffu8; 40];
        match respond(&s, "cluster.local", &junk, true) {
            Reply::Drop => {}
            Reply::Answer(bytes) => assert!(bytes.len() <= junk.len()),
            Reply::Forward => panic!("junk forwarded"),
        }
        // A response is never answered (no reflection loops).
        let Reply::Answer(answer) = respond(
            &s,
            "cluster.local",
            &query("web.default.svc.cluster.local", TYPE::A, false),
            true,
        ) else {
            panic!()
        };
        assert_eq!(respond(&s, "cluster.local", &answer, true), Reply::Drop);
    }

    #[test]
    fn mutated_queries_never_panic_or_amplify() {
        // A deterministic fuzz pass (xorshift): real queries with bytes
        // flipped, cut or extended, and random noise. Whatever comes in, the
        // reply to something that is not a well-formed query is never
        // larger than what came in.
        let s = services(3);
        let seeds = [
            query("web.default.svc.cluster.local", TYPE::A, true),
            query("_http._tcp.web.default.svc.cluster.local", TYPE::SRV, false),
            query("20.0.96.10.in-addr.arpa", TYPE::PTR, false),
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..30_000 {
            let mut bytes = seeds[round % seeds.len()].clone();
            match next() % 4 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % bytes.len();
                        bytes[i] = next() as u8;
                    }
                }
                1 => bytes.truncate((next() as usize) % bytes.len()),
                2 => bytes.extend((0..next() % 64).map(|_| next() as u8)),
                _ => bytes = (0..next() % 600).map(|_| next() as u8).collect(),
            }
            let well_formed = Packet::parse(&bytes)
                .map(|p| p.questions.len() == 1 && !p.has_flags(PacketFlag::RESPONSE))
                .unwrap_or(false);
            if let Reply::Answer(answer) = respond(&s, "cluster.local", &bytes, true) {
                assert!(answer.len() <= 512 || well_formed, "round {round}");
                if !well_formed {
                    assert!(answer.len() <= bytes.len(), "round {round}: amplified");
                }
            }
        }
    }

    #[test]
    fn resolv_conf_upstreams_leave_out_the_server_itself() {
        let text = "search lan\nnameserver 192.168.1.1\nnameserver 10.244.1.1\n# nameserver 9.9.9.9\nnameserver ::1\n";
        assert_eq!(
            upstreams_from_resolv_conf(text, "10.244.1.1".parse().unwrap()),
            vec![
                "192.168.1.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
