//! The endpoint over real loopback TCP, spoken to by hand so the tests see
//! exactly what a client sees. Timeouts here are safety nets: no test
//! asserts how long anything took.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::*;
use crate::control::protocol::VgpuStatsEntry;

/// Longest any single step may take before the test gives up.
const SAFETY_NET: Duration = Duration::from_secs(30);

/// A running endpoint; cancelled and awaited on drop of the test's runtime.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(bounds: Bounds) -> Server {
        Self::start_with(bounds, Arc::new(snapshot_of(3))).await
    }

    async fn start_with(bounds: Bounds, snapshot: SnapshotFn) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with(listener, snapshot, shutdown.clone(), bounds));
        Server {
            addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(SAFETY_NET, self.task)
            .await
            .expect("serve_http ends on shutdown")
            .expect("serve_http did not panic");
    }
}

fn snapshot_of(vgpus: usize) -> impl Fn() -> MetricsSnapshot + Send + Sync {
    move || MetricsSnapshot {
        version: "test".to_owned(),
        vgpus: (0..vgpus)
            .map(|i| VgpuStatsEntry {
                uuid: format!("00000000-0000-0000-0000-{i:012}"),
                gpu: "gpu0".to_owned(),
                profile: "small".to_owned(),
                register_reads: i as u64,
                ..VgpuStatsEntry::default()
            })
            .collect(),
        ..MetricsSnapshot::default()
    }
}

/// Sends `request` on a new connection and reads until the server closes.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    if stream.write_all(request.as_bytes()).await.is_err() {
        // Closed before the request went out: an empty answer.
        return String::new();
    }
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    match tokio::time::timeout(SAFETY_NET, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => {}
        // A reset also closes: the server dropped a connection with unread
        // bytes on it.
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(error)) => panic!("read: {error}"),
        Err(_) => panic!("the server did not close the connection"),
    }
    String::from_utf8(answer).expect("utf-8")
}

async fn scrape(addr: SocketAddr) -> String {
    exchange(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split_once("\r\n\r\n")?.0;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Bounds that close a connection only at the connection limit.
const NO_TIMEOUTS: Bounds = Bounds {
    max_connections: MAX_CONNECTIONS,
    header_read_timeout: Duration::from_secs(3600),
    connection_lifetime: Duration::from_secs(3600),
};

#[tokio::test]
async fn get_metrics_answers_with_the_rendered_text() {
    let server = Server::start(Bounds::DEFAULT).await;
    let answer = scrape(server.addr).await;
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    assert_eq!(header(&answer, "content-type"), Some(CONTENT_TYPE));
    assert_eq!(body(&answer), render(&snapshot_of(3)()));
    server.stop().await;
}

#[tokio::test]
async fn a_large_exposition_is_served_whole() {
    let server = Server::start_with(Bounds::DEFAULT, Arc::new(snapshot_of(400))).await;
    let answer = scrape(server.addr).await;
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    let text = render(&snapshot_of(400)());
    assert!(text.len() > 4 * MAX_REQUEST_HEAD_BYTES, "{}", text.len());
    assert_eq!(body(&answer), text);
    server.stop().await;
}

#[tokio::test]
async fn kept_alive_connections_serve_several_scrapes() {
    let server = Server::start(Bounds::DEFAULT).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let request = "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
    stream.write_all(request.as_bytes()).await.expect("send");
    stream.write_all(request.as_bytes()).await.expect("send");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let answers = read_to_close(&mut stream).await;
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 3, "{answers}");
    server.stop().await;
}

#[tokio::test]
async fn a_query_string_is_ignored() {
    let server = Server::start(Bounds::DEFAULT).await;
    let answer = exchange(
        server.addr,
        "GET /metrics?name[]=x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_is_not_read_and_the_connection_closes() {
    let server = Server::start(NO_TIMEOUTS).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // Announces far more than it sends, and keeps the connection open.
    stream
        .write_all(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nabc")
        .await
        .expect("send");
    let answer = read_to_close(&mut stream).await;
    assert_eq!(status(&answer), "HTTP/1.1 405 Method Not Allowed");
    server.stop().await;
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let server = Server::start(Bounds::DEFAULT).await;
    for path in ["/", "/metrics/", "/favicon.ico", "/metricsx"] {
        let answer = exchange(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&answer), "HTTP/1.1 404 Not Found", "{path}");
    }
    // The same for other methods: the path decides first.
    let answer = exchange(
        server.addr,
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "HTTP/1.1 404 Not Found");
    server.stop().await;
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let server = Server::start(Bounds::DEFAULT).await;
    for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"] {
        let answer = exchange(
            server.addr,
            &format!("{method} /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
        )
        .await;
        assert_eq!(
            status(&answer),
            "HTTP/1.1 405 Method Not Allowed",
            "{method}"
        );
        assert_eq!(header(&answer, "allow"), Some("GET"), "{method}");
    }
    server.stop().await;
}

#[tokio::test]
async fn garbage_gets_a_client_error_not_a_crash() {
    let server = Server::start(Bounds::DEFAULT).await;
    let answer = exchange(server.addr, "\x00\x01 not http at all\r\n\r\n").await;
    assert_eq!(status(&answer), "HTTP/1.1 400 Bad Request");
    let head = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(2 * MAX_REQUEST_HEAD_BYTES)
    );
    let answer = exchange(server.addr, &head).await;
    assert_eq!(
        status(&answer),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(status(&scrape(server.addr).await), "HTTP/1.1 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_until_one_ends() {
    let server = Server::start(NO_TIMEOUTS).await;
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Accepted after the sixteen (accept is in arrival order), so it
    // finds no free slot and is closed before anything is read.
    let mut extra = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(
        read_to_close(&mut extra).await,
        "",
        "the connection past the limit was served"
    );

    drop(held);
    // The server sees the sixteen close in its own time: retry until it has.
    let mut served = false;
    for _ in 0..200 {
        if status(&scrape(server.addr).await) == "HTTP/1.1 200 OK" {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served,
        "no scrape was served after the held connections closed"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_client_does_not_block_a_scrape() {
    let server = Server::start(Bounds::DEFAULT).await;
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled.write_all(b"GET /met").await.expect("send");
    let answer = scrape(server.addr).await;
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let bounds = Bounds {
        header_read_timeout: Duration::from_millis(200),
        ..NO_TIMEOUTS
    };
    let server = Server::start(bounds).await;
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: te")
        .await
        .expect("send");
    let answer = read_to_close(&mut stalled).await;
    assert_eq!(answer, "", "closed without an answer");
    // An idle kept-alive connection is cut off the same way.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("send");
    let answer = read_to_close(&mut idle).await;
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_is_closed_at_the_end_of_its_lifetime() {
    let bounds = Bounds {
        connection_lifetime: Duration::from_millis(200),
        ..NO_TIMEOUTS
    };
    let server = Server::start(bounds).await;
    let mut busy = TcpStream::connect(server.addr).await.expect("connect");
    busy.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("send");
    // Kept alive and never timed out by the header bound: only the
    // lifetime can close it.
    let answer = read_to_close(&mut busy).await;
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_serve_http_with_connections_open() {
    let server = Server::start(NO_TIMEOUTS).await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled.write_all(b"GET /metrics HT").await.expect("send");
    // Make sure both are being served before shutting down.
    assert_eq!(status(&scrape(server.addr).await), "HTTP/1.1 200 OK");
    server.stop().await;
    read_to_close(&mut idle).await;
    read_to_close(&mut stalled).await;
}
