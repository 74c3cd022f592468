//! A QMP client: the few exchanges kvmscope needs, line-delimited JSON over a Unix socket.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one QMP exchange may take. A QMP server serves one client at a time (libvirt
/// keeps its connection open), so a busy socket accepts but never greets: give up quickly.
const QMP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Why a QMP exchange failed, as a short lowercase phrase (refused, timed out, not QMP...).
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connection refused (QEMU gone, or not listening)")]
    Refused,
    #[error("no such socket")]
    NoSocket,
    #[error("permission denied (run as root)")]
    Denied,
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("socket setup")]
    Setup(#[source] std::io::Error),
    #[error("not a QMP socket (no greeting; an HMP monitor?)")]
    NoGreeting,
    #[error("write {command}")]
    Write {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {class}: {desc}")]
    Command {
        command: &'static str,
        class: String,
        desc: String,
    },
    #[error("timed out")]
    TimedOut,
    #[error("no answer within {} ms (busy: a QMP socket serves one client at a time)", QMP_TIMEOUT.as_millis())]
    NoAnswer,
    #[error("closed by QEMU (another client connected?)")]
    Closed,
    #[error("not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("read")]
    Read(#[source] std::io::Error),
    #[error("{command} returned an unexpected reply")]
    Reply {
        command: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl QmpError {
    /// The phrase with its causes, `a: b: c`, for a one-line message kept in a string field.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    }
}

/// One vCPU of `query-cpus-fast` (`cpu-index`, `thread-id`), or of QEMU < 2.12's `query-cpus`
/// (`CPU`, `thread_id`).
#[derive(Debug, serde::Deserialize)]
struct CpuInfo {
    #[serde(rename = "cpu-index", alias = "CPU")]
    index: u32,
    #[serde(rename = "thread-id", alias = "thread_id")]
    thread: u32,
}

/// Ask a QMP socket for each vCPU's thread: cpu-index → thread-id.
pub fn query_cpus(path: &Path) -> Result<BTreeMap<u32, u32>, QmpError> {
    let mut qmp = QmpClient::connect(path)?;
    let (command, reply) = match qmp.execute("query-cpus-fast") {
        Ok(r) => ("query-cpus-fast", r),
        // QEMU before 2.12 only has query-cpus (removed in 6.0).
        Err(QmpError::Command { class, .. }) if class == "CommandNotFound" => {
            ("query-cpus", qmp.execute("query-cpus")?)
        }
        Err(e) => return Err(e),
    };
    parse_cpus(command, reply)
}

fn parse_cpus(
    command: &'static str,
    reply: serde_json::Value,
) -> Result<BTreeMap<u32, u32>, QmpError> {
    let cpus: Vec<CpuInfo> =
        serde_json::from_value(reply).map_err(|source| QmpError::Reply { command, source })?;
    Ok(cpus.into_iter().map(|c| (c.index, c.thread)).collect())
}

/// The few QMP exchanges kvmscope needs, line-delimited JSON over a Unix socket.
struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deadline: Instant,
}

impl QmpClient {
    fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => QmpError::Refused,
            std::io::ErrorKind::NotFound => QmpError::NoSocket,
            std::io::ErrorKind::PermissionDenied => QmpError::Denied,
            _ => QmpError::Connect(e),
        })?;
        stream
            .set_read_timeout(Some(QMP_TIMEOUT))
            .map_err(QmpError::Setup)?;
        stream
            .set_write_timeout(Some(QMP_TIMEOUT))
            .map_err(QmpError::Setup)?;
        let writer = stream.try_clone().map_err(QmpError::Setup)?;
        let mut client = QmpClient {
            reader: BufReader::new(stream),
            writer,
            deadline: Instant::now() + QMP_TIMEOUT * 2,
        };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::NoGreeting);
        }
        client.execute("qmp_capabilities")?;
        Ok(client)
    }

    /// Run `command` and return its `return` value; events in between are skipped.
    fn execute(&mut self, command: &'static str) -> Result<serde_json::Value, QmpError> {
        let request = serde_json::json!({ "execute": command });
        writeln!(self.writer, "{request}").map_err(|source| QmpError::Write { command, source })?;
        loop {
            let mut msg = self.read_message()?;
            if let Some(ret) = msg.get_mut("return") {
                return Ok(ret.take());
            }
            if let Some(err) = msg.get("error") {
                let text = |key: &str| err.get(key).and_then(|c| c.as_str()).map(str::to_string);
                return Err(QmpError::Command {
                    command,
                    class: text("class").unwrap_or_else(|| "Error".to_string()),
                    desc: text("desc").unwrap_or_default(),
                });
            }
            // {"event": ...}: asynchronous, not ours.
        }
    }

    fn read_message(&mut self) -> Result<serde_json::Value, QmpError> {
        if Instant::now() > self.deadline {
            return Err(QmpError::TimedOut);
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(QmpError::Closed),
            Ok(_) => serde_json::from_str(&line).map_err(QmpError::NotJson),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(QmpError::NoAnswer)
            }
            Err(e) => Err(QmpError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_both_reply_shapes() {
        let fast = serde_json::json!([
            {"cpu-index": 0, "thread-id": 100, "qom-path": "/machine/unattached/device[0]", "target": "x86_64"},
            {"cpu-index": 1, "thread-id": 101, "qom-path": "/machine/unattached/device[1]", "target": "x86_64"}
        ]);
        let parse = |reply| parse_cpus("query-cpus-fast", reply);
        assert_eq!(parse(fast).unwrap(), BTreeMap::from([(0, 100), (1, 101)]));
        let old = serde_json::json!([{"CPU": 0, "current": true, "thread_id": 7}]);
        assert_eq!(parse(old).unwrap(), BTreeMap::from([(0, 7)]));
        let err = parse(serde_json::json!({"x": 1})).unwrap_err();
        assert!(
            err.chain()
                .starts_with("query-cpus-fast returned an unexpected reply: "),
            "{}",
            err.chain()
        );
        assert!(parse(serde_json::json!([{"cpu-index": 0}])).is_err());
    }

    #[test]
    fn qmp_client_speaks_the_protocol() {
        let dir = std::env::temp_dir().join(format!("kvmscope-qmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("query-cpus-fast"));
            writeln!(w, r#"{{"event": "RESUME", "data": {{}}}}"#).unwrap();
            writeln!(w, r#"{{"return": [{{"cpu-index": 1, "thread-id": 42}}]}}"#).unwrap();
        });
        assert_eq!(query_cpus(&path).unwrap(), BTreeMap::from([(1, 42)]));
        server.join().unwrap();

        // A socket that accepts but never greets times out with a clear phrase.
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = query_cpus(&path).unwrap_err();
        assert!(matches!(err, QmpError::NoAnswer), "{err:?}");
        assert!(err.to_string().starts_with("no answer within"), "{err}");
        drop(listener);
        let err = query_cpus(&path).unwrap_err();
        assert!(matches!(err, QmpError::Refused), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
