//! The HTTP(S) endpoint: `/metrics` (OpenMetrics 1.0 text, or the 0.0.4 text format for
//! scrapers that ask only for that), `/` (a short HTML page) and `/-/healthy`.
//!
//! One thread per connection, at most [`Limits::max_connections`] of them; every read and
//! write has a deadline, a request head is at most [`Limits::head_bytes`], and httparse does
//! the parsing. So a slow or hung client costs one thread until its deadline and nothing else,
//! a flood gets 503, and malformed or oversized requests get a 4xx.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::board::Board;
use crate::web_config::WebConfig;

/// OpenMetrics 1.0, what Prometheus asks for first.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format, for scrapers (and `promtool check metrics`) that want it.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How much any one client may take.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once; more get 503 and are closed.
    pub max_connections: usize,
    /// Largest request head (request line and headers), bytes; more gets 431.
    pub head_bytes: usize,
    /// Time to send a whole request head once its first byte came; longer gets 408.
    pub head_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Time to take a response; a client that reads slower is dropped.
    pub write_timeout: Duration,
    /// How long a scrape waits for a snapshot newer than its request.
    pub fresh_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            head_bytes: 8 * 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            fresh_wait: Duration::from_secs(1),
        }
    }
}

/// What the endpoint serves.
pub struct Endpoint {
    pub registry: Registry,
    pub board: Arc<Board>,
    pub web: WebConfig,
    pub limits: Limits,
}

/// A parsed request: what routing needs and nothing else (no credentials are kept).
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub accept: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines, each without its CRLF.
    pub headers: Vec<String>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n").into_bytes(),
            headers: Vec::new(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

const INDEX_HTML: &str = "<!DOCTYPE html>\n<html><head><title>kvmscope exporter</title></head><body>\n\
<h1>kvmscope exporter</h1>\n<p>How the host schedules KVM vCPUs, per vCPU, VM and pCPU.</p>\n\
<ul><li><a href=\"/metrics\">/metrics</a> (OpenMetrics)</li><li><a href=\"/-/healthy\">/-/healthy</a></li></ul>\n\
</body></html>\n";

/// Does `accept` name a format we serve before the other? OpenMetrics unless the client
/// lists only the classic text format.
fn wants_classic_text(accept: Option<&[u8]>) -> bool {
    let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
        return false;
    };
    !accept.contains("application/openmetrics-text") && accept.contains("text/plain")
}

impl Endpoint {
    /// The response to one request (pure apart from reading the board).
    pub fn respond(&self, req: &Request<'_>) -> Response {
        if let Some(auth) = &self.web.auth {
            if !auth.allows(req.authorization) {
                let mut r = Response::text(401, "Unauthorized");
                r.headers
                    .push("WWW-Authenticate: Basic realm=\"kvmscope\"".into());
                return r;
            }
        }
        if req.method != "GET" && req.method != "HEAD" {
            let mut r = Response::text(405, "only GET and HEAD are served");
            r.headers.push("Allow: GET, HEAD".into());
            return r;
        }
        let path = req.path.split('?').next().unwrap_or("");
        match path {
            "/metrics" => self.metrics(req),
            "/" => Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: INDEX_HTML.as_bytes().to_vec(),
                headers: Vec::new(),
            },
            "/-/healthy" if self.board.is_closed() => {
                Response::text(503, "the event source has stopped")
            }
            "/-/healthy" => Response::text(200, "Healthy"),
            _ => Response::text(404, "not found: try /metrics"),
        }
    }

    fn metrics(&self, req: &Request<'_>) -> Response {
        // Asks the ingest thread for a snapshot newer than this request; the collector then
        // encodes the latest one.
        self.board.fresh(self.limits.fresh_wait);
        let mut body = String::with_capacity(64 * 1024);
        let (encoded, content_type) = if wants_classic_text(req.accept) {
            (
                prometheus_client::encoding::prometheus_text::encode(&mut body, &self.registry),
                TEXT_CONTENT_TYPE,
            )
        } else {
            (
                prometheus_client::encoding::text::encode(&mut body, &self.registry),
                OPENMETRICS_CONTENT_TYPE,
            )
        };
        match encoded {
            Ok(()) => Response {
                status: 200,
                content_type,
                body: body.into_bytes(),
                headers: Vec::new(),
            },
            Err(_) => Response::text(500, "cannot encode the metrics"),
        }
    }
}

/// Serves `listener` until `stop` is set (checked every 200 ms); connections still open
/// then finish on their own threads.
pub fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, stop: &AtomicBool) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Acquire) {
        if !readable(&listener, Duration::from_millis(200))? {
            continue;
        }
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            // The peer went away between poll and accept, or descriptors ran out for a
            // moment: neither ends the server.
            Err(e) => {
                log::debug!("accept: {e}");
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= endpoint.limits.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            refuse_busy(stream);
            continue;
        }
        let endpoint = Arc::clone(&endpoint);
        let guard = OpenConnection(Arc::clone(&open));
        let spawned = std::thread::Builder::new()
            .name("exporter-http".into())
            .spawn(move || {
                let _guard = guard;
                if let Err(e) = connection(stream, &endpoint) {
                    log::debug!("connection from {peer}: {e}");
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a thread for a connection from {peer}: {e}");
        }
    }
    Ok(())
}

/// Counts a connection as open until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn readable(listener: &TcpListener, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(listener, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).map_err(io::Error::other)?;
    match poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write_response(
        &mut stream,
        &Response::text(503, "too many connections"),
        false,
        false,
    );
}

/// A plain or TLS byte stream over one TCP connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Why reading a request head stopped.
enum HeadError {
    /// The client closed the connection between requests.
    Closed,
    Io(io::Error),
    /// Answer with this status and close.
    Reply(u16, &'static str),
}

fn connection(tcp: TcpStream, endpoint: &Endpoint) -> io::Result<()> {
    let limits = &endpoint.limits;
    tcp.set_write_timeout(Some(limits.write_timeout))?;
    tcp.set_nodelay(true)?;
    let mut stream = match &endpoint.web.tls {
        None => Stream::Plain(tcp),
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(Arc::clone(cfg))
                .map_err(|e| io::Error::other(e.to_string()))?;
            Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
        }
    };
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let head = match read_head(&mut stream, &mut buf, limits) {
            Ok(n) => n,
            Err(HeadError::Closed) => return Ok(()),
            Err(HeadError::Io(e)) => return Err(e),
            Err(HeadError::Reply(status, why)) => {
                write_response(&mut stream, &Response::text(status, why), false, false)?;
                return Ok(());
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        // read_head parsed these bytes already, so this cannot fail differently.
        if parsed.parse(&buf[..head]).is_err() {
            write_response(
                &mut stream,
                &Response::text(400, "bad request"),
                false,
                false,
            )?;
            return Ok(());
        }
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let has_body = header("content-length").is_some_and(|v| v != b"0")
            || header("transfer-encoding").is_some();
        let wants_close = parsed.version == Some(0)
            || header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        let req = Request {
            method: parsed.method.unwrap_or(""),
            path: parsed.path.unwrap_or(""),
            accept: header("accept"),
            authorization: header("authorization"),
        };
        let response = if has_body {
            // Nothing here takes a body; not reading it means the connection must close.
            Response::text(413, "requests with a body are not served")
        } else {
            endpoint.respond(&req)
        };
        log::debug!("{} {} -> {}", req.method, req.path, response.status);
        let keep = !has_body && !wants_close && response.status < 400;
        let head_only = req.method == "HEAD";
        write_response(&mut stream, &response, keep, head_only)?;
        if !keep {
            return Ok(());
        }
        buf.drain(..head);
    }
}

/// Reads until `buf` holds one complete request head; returns its length.
fn read_head(stream: &mut Stream, buf: &mut Vec<u8>, limits: &Limits) -> Result<usize, HeadError> {
    let mut deadline: Option<Instant> = None;
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            match httparse::Request::new(&mut headers).parse(buf) {
                Ok(httparse::Status::Complete(n)) => return Ok(n),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HeadError::Reply(431, "too many headers"))
                }
                Err(_) => return Err(HeadError::Reply(400, "malformed request")),
            }
            if buf.len() >= limits.head_bytes {
                return Err(HeadError::Reply(431, "request head too large"));
            }
        }
        // Idle between requests: the idle timeout; once a request has begun, its deadline.
        let timeout = match deadline {
            None => limits.idle_timeout,
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        if timeout.is_zero() {
            return Err(HeadError::Reply(408, "request head not complete in time"));
        }
        stream
            .tcp()
            .set_read_timeout(Some(timeout))
            .map_err(HeadError::Io)?;
        let room = (limits.head_bytes - buf.len().min(limits.head_bytes)).clamp(1, chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Reply(400, "request head cut short")),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    return Err(HeadError::Closed);
                }
                return Err(HeadError::Reply(408, "request head not complete in time"));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

fn write_response(
    stream: &mut impl Write,
    r: &Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + r.body.len());
    write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )?;
    for h in &r.headers {
        write!(out, "{h}\r\n")?;
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}

/// Binds `addr`, with a message that says what to do when the port is taken.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, crate::ExporterError> {
    TcpListener::bind(addr).map_err(|error| crate::ExporterError::Bind { addr, error })
}
