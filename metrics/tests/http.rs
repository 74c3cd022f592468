//! The endpoint under bad clients: malformed, oversized, slow and hung requests, 50 scrapes
//! at once, TLS and basic auth from a web config; and ingestion going on meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use metrics::{Board, Endpoint, Limits, SourceFacts, WebConfig};
use model::synth::{demo_stream, SynthSource};
use model::Model;

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    board: Arc<Board>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(web: WebConfig, limits: Limits) -> Server {
    let board = Arc::new(Board::new());
    let mut m = Model::new(metrics::exporter_model_config());
    m.ingest_batch(&demo_stream(1.0));
    board.publish(m.snapshot());
    let facts = SourceFacts {
        version: "test".into(),
        probes_attached: true,
    };
    let endpoint = Arc::new(Endpoint {
        registry: metrics::registry(Arc::clone(&board), facts),
        board: Arc::clone(&board),
        web,
        limits,
    });
    let listener = metrics::http::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let thread = thread::spawn(move || metrics::serve(listener, endpoint, &s));
    Server {
        addr,
        stop,
        thread: Some(thread),
        board,
    }
}

fn quick_limits() -> Limits {
    Limits {
        head_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(5),
        // No ingest thread here: a scrape takes the snapshot it finds.
        fresh_wait: Duration::ZERO,
        ..Limits::default()
    }
}

/// Sends `raw`, reads the whole answer (the server closes or says Content-Length).
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(raw).expect("send");
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().expect("status");
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return (status, format!("{head}\r\n\r\n{body}"));
            }
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn routes_answer_and_bad_requests_get_4xx() {
    let srv = start(WebConfig::default(), quick_limits());
    let (status, r) = get(srv.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        r.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{r}"
    );
    assert!(r.contains("kvmscope_vcpu_run_seconds_total{domain=\"vm0\",vcpu=\"0\"}"));
    assert!(r.ends_with("# EOF\n"));
    let (status, r) = exchange(
        srv.addr,
        b"GET /metrics HTTP/1.1\r\nAccept: text/plain;version=0.0.4\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
    let (status, r) = get(srv.addr, "/");
    assert_eq!(status, 200);
    assert!(r.contains("<a href=\"/metrics\">"));
    assert_eq!(get(srv.addr, "/-/healthy").0, 200);
    assert_eq!(get(srv.addr, "/metrics?x=1").0, 200);
    assert_eq!(get(srv.addr, "/nope").0, 404);
    let (status, r) = exchange(srv.addr, b"DELETE /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 405);
    assert!(r.contains("Allow: GET, HEAD"));
    assert_eq!(
        exchange(
            srv.addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        )
        .0,
        413
    );
    assert_eq!(
        exchange(srv.addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").0,
        400
    );
    assert_eq!(exchange(srv.addr, b"GET /metrics HTTP/9\r\n\r\n").0, 400);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(exchange(srv.addr, huge.as_bytes()).0, 431);
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        exchange(srv.addr, format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).0,
        431
    );
    // A HEAD has the headers and no body.
    let mut s = TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut r = String::new();
    s.read_to_string(&mut r).expect("read until close");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "no body after the head: {r}");
    // Keep-alive: two requests on one connection.
    let mut s = TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    for _ in 0..2 {
        s.write_all(b"GET /-/healthy HTTP/1.1\r\n\r\n")
            .expect("send");
        let (status, r) = read_response(&mut s);
        assert_eq!(status, 200);
        assert!(r.contains("Connection: keep-alive"));
    }
    // The server still serves after all that.
    assert_eq!(get(srv.addr, "/metrics").0, 200);
}

#[test]
fn a_slow_client_gets_408_and_hung_ones_do_not_stop_50_concurrent_scrapes() {
    let srv = start(WebConfig::default(), quick_limits());
    // A request head that never ends: 408 after head_timeout.
    let mut slow = TcpStream::connect(srv.addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .expect("send");
    // Hung clients: connected, silent; and one that asked for metrics and never reads.
    let hung: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(srv.addr).expect("connect"))
        .collect();
    let mut never_reads = TcpStream::connect(srv.addr).expect("connect");
    never_reads
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .expect("send");
    let scrapes: Vec<_> = (0..50)
        .map(|_| {
            let addr = srv.addr;
            thread::spawn(move || get(addr, "/metrics"))
        })
        .collect();
    for s in scrapes {
        let (status, body) = s.join().expect("scrape thread");
        assert_eq!(status, 200);
        assert!(body.ends_with("# EOF\n"));
    }
    assert_eq!(read_response(&mut slow).0, 408);
    drop(hung);
}

#[test]
fn ingestion_goes_on_while_a_scraper_hangs() {
    let srv = start(WebConfig::default(), Limits::default());
    // A scraper that sends a request and never reads the answer, holding its connection.
    let mut hung = TcpStream::connect(srv.addr).expect("connect");
    hung.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .expect("send");
    let events = demo_stream(5.0);
    let total = events.len() as u64;
    let mut source = SynthSource::new(events);
    let mut model = Model::new(metrics::exporter_model_config());
    let stop = AtomicBool::new(false);
    let began = Instant::now();
    // Each poll a scrape is waiting: the loop publishes between batches and goes on.
    let scraper = {
        let addr = srv.addr;
        thread::spawn(move || (0..20).map(|_| get(addr, "/metrics").0).collect::<Vec<_>>())
    };
    metrics::ingest(
        &mut source,
        &mut model,
        &srv.board,
        &stop,
        Duration::from_millis(1),
    )
    .expect("ingest");
    assert_eq!(model.events(), total, "every event folded in");
    assert!(srv.board.is_closed());
    assert!(scraper.join().expect("scraper").iter().all(|&s| s == 200));
    let _ = began;
    drop(hung);
}

#[test]
fn tls_and_basic_auth_from_a_web_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    std::fs::write(
        d.join("web.yml"),
        format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prom: '{hash}'\n"),
    )
    .expect("write config");
    let web = WebConfig::load(&d.join("web.yml")).expect("load web config");
    let srv = start(web, quick_limits());
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
            ])
            .arg("--cacert")
            .arg(d.join("cert.pem"))
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let url = format!("https://127.0.0.1:{}/metrics", srv.addr.port());
    assert_eq!(curl(&["-u", "prom:s3cret", &url]), "200");
    assert_eq!(curl(&["-u", "prom:wrong", &url]), "401");
    assert_eq!(curl(&[&url]), "401");
    // Plain HTTP on the TLS port gets no answer, and the server carries on.
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{}/metrics", srv.addr.port())]),
        "000"
    );
    assert_eq!(curl(&["-u", "prom:s3cret", &url]), "200");
}

#[test]
fn a_port_in_use_is_one_line_that_names_the_bind_error_once() {
    let taken = metrics::http::bind("127.0.0.1:0".parse().unwrap()).expect("a free port");
    let addr = taken.local_addr().unwrap();
    let err = metrics::http::bind(addr).expect_err("the port is taken");
    // The error and its causes, as the binary prints them: one line, "a: b: c".
    let line = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
    assert!(line.contains(&addr.to_string()), "{line}");
    assert!(line.contains("another exporter"), "{line}");
    assert_eq!(line.matches("in use").count(), 1, "{line} (io: {in_use})");
}
