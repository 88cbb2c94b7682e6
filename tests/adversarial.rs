//! Hostile clients against a real `fedgate run` edge: slowloris upgrades, thousands of sockets
//! opening and closing, fragmented and oversized frames, and tokens replayed after they
//! expired. Each is refused or cleaned up, nothing is left behind, and a well-behaved client
//! (from another loopback address, as another host would be) is served throughout. How much
//! the attacks slow that client is measured by `fedgate bench adversarial`, not here.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient, WsError};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use support::{BrokerProcess, EDGE_USERS_TO_LONDON, Network, collective_block, gate_block};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

const NODES: usize = 10;
const MAX_MESSAGE: usize = 64 * 1024;
const PER_ADDRESS: usize = 32;
/// The page origin a browser socket comes from.
const ORIGIN: &str = "http://ops.example";

struct Edge {
    _london: Network,
    _fleet: fedgate_dev::fleet::Fleet,
    dir: tempfile::TempDir,
    process: BrokerProcess,
    keys: TokenKeys,
}

impl Edge {
    async fn start() -> Edge {
        let london = Network::start("london");
        let fleet = london.start_fleet(NODES).await;
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("identity.toml");
        std::fs::write(&rules, EDGE_USERS_TO_LONDON).unwrap();
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let text = format!(
            "[instance]\nname = \"adv\"\n\n[identity]\nrules = {rules:?}\n\n{}{}\n\
             [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\norigins = [{ORIGIN:?}]\nmax_message_bytes = {MAX_MESSAGE}\n\
             handshake_timeout_s = 1\nmax_handshakes = 256\nmax_handshakes_per_address = {PER_ADDRESS}\n\
             max_connections = 4096\nrate_per_second = 100000\nrate_burst = 100000\n",
            gate_block(
                dir.path(),
                &[("rpcutil.policy", "policy default allow\n")],
                ""
            ),
            collective_block("collectives.london", &london),
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        let process = BrokerProcess::spawn(&config, "adv").await;
        Edge {
            _london: london,
            _fleet: fleet,
            dir,
            process,
            keys: TokenKeys::load(&key).unwrap(),
        }
    }

    fn url(&self) -> String {
        self.process.edge.clone().expect("an edge")
    }

    fn addr(&self) -> std::net::SocketAddr {
        let url = self.url();
        let hostport = url.trim_start_matches("ws://").trim_end_matches("/ws");
        hostport.parse().unwrap()
    }

    fn token(&self, ttl: Duration) -> String {
        self.keys
            .issue("alice", ttl, None, SystemTime::now())
            .unwrap()
    }

    /// A client from `from` with a fresh token.
    fn connect(&self, from: &str) -> Connect {
        Connect {
            url: self.url(),
            token: Some(self.token(Duration::from_secs(600))),
            local_address: Some(from.parse::<IpAddr>().unwrap()),
            ..Connect::default()
        }
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.pid()))
            .unwrap()
            .count()
    }

    fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit/audit.log")
    }
}

fn ping(id: &str) -> serde_json::Value {
    json!({"type":"rpc","id":id,"collective":"london","agent":"rpcutil","action":"ping","limit":NODES,"timeout_ms":5000})
}

/// One ping answered by every node.
async fn served(client: &mut WsClient, id: &str) {
    let done = client.call(&ping(id), |_| {}).await.unwrap();
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["responses"], NODES, "{done}");
}

/// Reads until the server closes the connection; false if it is still open after `limit`.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn wait_for(seconds: u64, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_upgrades_are_cut_off_and_capped_per_address() {
    let edge = Edge::start().await;
    let mut good = WsClient::connect(&edge.connect("127.0.0.2")).await.unwrap();
    served(&mut good, "before").await;

    // From 127.0.0.1: as many slow upgrades as one address may hold, each sending a header
    // line every 300 ms and never the end of its headers.
    let mut slow = Vec::new();
    for _ in 0..PER_ADDRESS {
        let mut stream = tokio::net::TcpStream::connect(edge.addr()).await.unwrap();
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let dribble = tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for stream in &mut slow {
                let _ = stream.write_all(b"X-Slow: 1\r\n").await;
            }
        }
        slow
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One more from the same address is closed at once...
    let mut extra = tokio::net::TcpStream::connect(edge.addr()).await.unwrap();
    assert!(closed_by_server(&mut extra, Duration::from_secs(2)).await);
    // ...while another address is served, on its open socket and on a new one.
    served(&mut good, "during").await;
    let mut fresh = WsClient::connect(&edge.connect("127.0.0.3")).await.unwrap();
    served(&mut fresh, "fresh").await;

    // The slow ones are cut off at the header timeout (1 s here), dribbling or not.
    let mut slow = dribble.await.unwrap();
    for stream in &mut slow {
        assert!(closed_by_server(stream, Duration::from_secs(5)).await);
    }
    // Their address may upgrade again.
    let mut again = WsClient::connect(&edge.connect("127.0.0.1")).await.unwrap();
    served(&mut again, "again").await;
    assert!(
        edge.process
            .counter("fedgate_edge_refused_total", &[("reason", "handshakes")])
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_sockets_opening_and_closing_leave_nothing_behind() {
    let edge = Edge::start().await;
    let mut good = WsClient::connect(&edge.connect("127.0.0.2")).await.unwrap();
    served(&mut good, "warm").await;
    let baseline = edge.fds();

    // 2000 sockets, 32 at a time: a quarter close politely, a quarter drop the TCP connection
    // without a close frame, a quarter leave in the middle of a request, and a quarter drop
    // during the upgrade.
    let connect = edge.connect("127.0.0.1");
    let addr = edge.addr();
    for round in 0..(2000 / 32) {
        let batch = (0..32).map(|i| {
            let connect = connect.clone();
            async move {
                match (round * 32 + i) % 4 {
                    0 => WsClient::connect(&connect).await.unwrap().close().await,
                    1 => drop(WsClient::connect(&connect).await.unwrap()),
                    2 => {
                        let mut client = WsClient::connect(&connect).await.unwrap();
                        client.send(&ping(&format!("c{i}"))).await.unwrap();
                        drop(client);
                    }
                    _ => {
                        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                        let _ = stream
                            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                            .await;
                        drop(stream);
                    }
                }
            }
        });
        futures::future::join_all(batch).await;
        if round % 16 == 0 {
            served(&mut good, &format!("r{round}")).await;
        }
    }
    served(&mut good, "after").await;
    // Every socket's task and file are gone once its requests have timed out.
    let sockets_gone = wait_for(20, async || {
        edge.process.counter_value("fedgate_edge_sockets").await == 1.0
    })
    .await;
    assert!(sockets_gone, "sockets still counted");
    let fds_back = wait_for(20, async || edge.fds() <= baseline + 4).await;
    assert!(fds_back, "fds: {} before, {} after", baseline, edge.fds());
    // Each request that was sent before its socket went away is on the record, decided once.
    let records = support::audit_records(&edge.audit_file());
    let decided = records
        .iter()
        .filter(|r| r.kind == fedgate::audit::Kind::Decision)
        .count();
    assert!(decided >= 500, "{decided} decisions");
}

/// A client socket from 127.0.0.2 for raw frames.
async fn raw_socket(edge: &Edge) -> fedgate::edge::client::Socket {
    fedgate::edge::client::open(&edge.connect("127.0.0.2"))
        .await
        .unwrap()
}

async fn next_text(socket: &mut fedgate::edge::client::Socket) -> serde_json::Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).unwrap(),
            Ok(Some(Ok(_))) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

async fn close_code(socket: &mut fedgate::edge::client::Socket) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return frame.code.into(),
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) => return 1006,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) => return 1006,
            Err(_) => panic!("the socket was not closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fragmented_frames_are_joined_and_oversized_ones_close_the_socket() {
    let edge = Edge::start().await;

    // A request in 200 fragments is one message.
    let mut socket = raw_socket(&edge).await;
    assert_eq!(next_text(&mut socket).await["type"], "welcome");
    let text = ping("frag").to_string();
    let pieces: Vec<&[u8]> = text.as_bytes().chunks(text.len().div_ceil(200)).collect();
    for (n, piece) in pieces.iter().enumerate() {
        let opcode = if n == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(piece.to_vec(), opcode, n + 1 == pieces.len());
        socket.send(Message::Frame(frame)).await.unwrap();
    }
    let mut replies = 0;
    loop {
        let message = next_text(&mut socket).await;
        match message["type"].as_str() {
            Some("reply") => replies += 1,
            Some("done") => break,
            _ => panic!("{message}"),
        }
    }
    assert_eq!(replies, NODES);

    // Fragments that add up to more than the limit: 1009, though each is small.
    let mut socket = raw_socket(&edge).await;
    assert_eq!(next_text(&mut socket).await["type"], "welcome");
    let piece = vec![b' '; 8 * 1024];
    let mut sent = 0;
    let mut n = 0;
    while sent <= MAX_MESSAGE + piece.len() {
        let opcode = if n == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        if socket
            .send(Message::Frame(Frame::message(piece.clone(), opcode, false)))
            .await
            .is_err()
        {
            break;
        }
        sent += piece.len();
        n += 1;
    }
    assert_eq!(close_code(&mut socket).await, 1009);

    // A frame header that claims 4 EiB: refused from the header alone, nothing allocated.
    let rss_before = rss_kib(edge.process.pid());
    let mut socket = raw_socket(&edge).await;
    assert_eq!(next_text(&mut socket).await["type"], "welcome");
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        mask: Some([1, 2, 3, 4]),
        ..FrameHeader::default()
    };
    let mut bytes = Vec::new();
    header.format(1u64 << 62, &mut bytes).unwrap();
    let stream = match socket.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(stream) => stream,
        _ => panic!("a plain socket"),
    };
    stream.write_all(&bytes).await.unwrap();
    stream.write_all(&[b'x'; 1024]).await.unwrap();
    assert_eq!(close_code(&mut socket).await, 1009);
    assert!(rss_kib(edge.process.pid()) < rss_before + 16 * 1024);
    assert!(
        edge.process
            .counter("fedgate_edge_refused_total", &[("reason", "too_big")])
            .await
            >= 2.0
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_replayed_after_it_expired_is_refused_everywhere() {
    let edge = Edge::start().await;
    let token = edge.token(Duration::from_secs(2));
    let with_token = Connect {
        token: Some(token.clone()),
        ..edge.connect("127.0.0.2")
    };
    // While it is valid, it may be used again and again (it is a bearer token).
    for n in 0..3 {
        let mut client = WsClient::connect(&with_token).await.unwrap();
        served(&mut client, &format!("valid{n}")).await;
        client.close().await;
    }
    let mut open = WsClient::connect(&with_token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Expired: the upgrade is refused...
    match WsClient::connect(&with_token).await {
        Err(WsError::Refused { status, body }) => {
            assert_eq!(status, 401);
            assert!(body.contains("expired"), "{body}");
        }
        other => panic!("an expired token opened a socket: {:?}", other.map(|_| ())),
    }
    // ...as the first message of a socket opened without one...
    let mut bare = fedgate::edge::client::open(&Connect {
        token: None,
        origin: Some(ORIGIN.into()),
        ..edge.connect("127.0.0.2")
    })
    .await
    .unwrap();
    bare.send(Message::Text(
        json!({"type":"auth","token":token}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_ne!(close_code(&mut bare).await, 1000);
    // ...and the socket it opened while valid was closed when it expired.
    let err = open.call(&ping("late"), |_| {}).await.unwrap_err();
    assert!(matches!(err, WsError::Closed { .. }), "{err}");
    assert!(
        edge.process
            .counter("fedgate_edge_refused_total", &[("reason", "token")])
            .await
            >= 1.0
    );
}
