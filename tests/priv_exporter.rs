//! `kvmscope exporter` scraped by a real Prometheus (Debian 12's 2.42, from scripts/setup.sh):
//! per-vCPU `rate()` of run and run-queue wait equal the kernel's schedstat rates over the
//! same interval within 2%, and the series of a VM that ends go stale.
//!
//! The exporter runs with its default target (every KVM user), so it has to pick up two
//! bundled VMMs started as separate processes: a long one (3 spin vCPUs on the host's pCPUs,
//! the one measured) and a short one (ends mid-test). Both call their VM `vm0`; the second
//! process's series get `vm0-PID`, found through `kvmscope_vcpu_info`.
//!
//! Prometheus' `rate(x[W])` extrapolates its first and last samples in the window to the
//! window's edges; for a counter growing steadily that equals the slope between those two
//! samples, so the test compares with the schedstat slope between their timestamps
//! (CLOCK_REALTIME, interpolated from readings every 5 ms).

mod common;
use common::schedstat::*;
use common::*;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Prometheus scrapes every second; rates cover this window.
const WINDOW_S: u64 = 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_vmm(vcpus: u32, seconds: u32) -> KillOnDrop {
    let child = kvmscope()
        .args(["vmm", "--vms", "1", "--vcpus", &vcpus.to_string()])
        .args(["--workload", "spin", "--duration", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kvmscope vmm");
    KillOnDrop(child)
}

fn wait_for_vcpus(pid: u32, n: usize) -> Vec<u32> {
    let began = Instant::now();
    loop {
        let t = vcpu_tids(pid);
        if t.len() == n {
            return t;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "vmm {pid} did not start {n} vCPU threads: {t:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `GET` on the Prometheus API with curl (form-encoded parameters), as JSON; `None` while
/// Prometheus does not answer yet.
fn try_api(port: u16, path: &str, params: &[(&str, String)]) -> Option<serde_json::Value> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sG", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in params {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("run curl");
    serde_json::from_slice(&out.stdout).ok()
}

fn api(port: u16, path: &str, params: &[(&str, String)]) -> serde_json::Value {
    try_api(port, path, params).unwrap_or_else(|| panic!("{path} {params:?}: no JSON answer"))
}

/// An instant query at `time` (Unix seconds); the result vector.
fn query(port: u16, q: &str, time: f64) -> Vec<serde_json::Value> {
    let doc = api(
        port,
        "/api/v1/query",
        &[("query", q.to_string()), ("time", format!("{time:.3}"))],
    );
    assert_eq!(doc["status"], "success", "{q}: {doc}");
    doc["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn label<'a>(series: &'a serde_json::Value, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or("")
}

fn poll_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(began.elapsed() < limit, "{what} within {limit:?}");
        thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_rates_match_schedstat_and_ended_vms_go_stale() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let version = Command::new("prometheus").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "no prometheus binary: run scripts/setup.sh"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let test_start = realtime_ns() as f64 / 1e9;
    let long = start_vmm(3, 90);
    let long_pid = long.0.id();
    let tids = wait_for_vcpus(long_pid, 3);

    let exporter_port = free_port();
    let exporter = kvmscope()
        .args([
            "exporter",
            "--listen",
            &format!("127.0.0.1:{exporter_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kvmscope exporter");
    let exporter = KillOnDrop(exporter);

    let prom_port = free_port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: kvmscope\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
        ),
    )
    .expect("write prometheus.yml");
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prometheus = KillOnDrop(prometheus);

    // Kernel figures of the long VMM's vCPUs, on Prometheus' clock.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_threads(
        long_pid,
        tids.clone(),
        Arc::clone(&stop),
        Duration::from_millis(5),
        realtime_ns,
    );

    poll_until(
        "the exporter target up in Prometheus",
        Duration::from_secs(60),
        || {
            let doc = try_api(prom_port, "/api/v1/targets", &[])?;
            let up = doc["data"]["activeTargets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["health"] == "up"));
            up.then_some(())
        },
    );
    // A VM that starts now and ends mid-test.
    let short = start_vmm(1, 8);
    let short_pid = short.0.id();
    wait_for_vcpus(short_pid, 1);
    let now = || realtime_ns() as f64 / 1e9;
    // The short VM's series, while it runs.
    let short_domain = poll_until("the short VM's series", Duration::from_secs(30), || {
        let r = query(
            prom_port,
            &format!("kvmscope_vcpu_info{{pid=\"{short_pid}\"}}"),
            now(),
        );
        r.first().map(|s| label(s, "domain").to_string())
    });
    assert_eq!(
        short_domain,
        format!("vm0-{short_pid}"),
        "a second vm0 gets its pid"
    );
    let tid_vcpu = poll_until("the long VM's vCPUs", Duration::from_secs(30), || {
        let r = query(
            prom_port,
            &format!("kvmscope_vcpu_info{{pid=\"{long_pid}\"}}"),
            now(),
        );
        (r.len() == 3).then(|| {
            r.iter()
                .map(|s| {
                    let tid: u32 = label(s, "tid").parse().expect("tid");
                    (tid, label(s, "vcpu").to_string())
                })
                .collect::<Vec<_>>()
        })
    });
    // Usually `vm0`; `vm0-PID` if another bundled VMM with a lower pid runs on this host.
    let long_domain = label_domain_of(prom_port, long_pid, now());
    assert!(long_domain.starts_with("vm0"), "{long_domain}");
    // Reap the short VMM as soon as it ends, as its parent would.
    let reaper = thread::spawn(move || {
        let mut short = short;
        let _ = short.0.wait();
    });

    // A full window of scrapes of the long VM.
    let first_seen = now();
    thread::sleep(Duration::from_secs(WINDOW_S + 2));
    let at_time = now();
    assert!(at_time - first_seen >= WINDOW_S as f64);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");

    let mut failures = Vec::new();
    for (metric, pick) in [
        ("kvmscope_vcpu_run_seconds_total", 0usize),
        ("kvmscope_vcpu_runqueue_wait_seconds_total", 1),
    ] {
        let sel = format!("{metric}{{domain=\"{long_domain}\"}}");
        let rates = query(prom_port, &format!("rate({sel}[{WINDOW_S}s])"), at_time);
        let raw = query(prom_port, &format!("{sel}[{WINDOW_S}s]"), at_time);
        assert_eq!(rates.len(), 3, "{metric}: {rates:?}");
        for r in &rates {
            let vcpu = label(r, "vcpu");
            let rate: f64 = r["value"][1]
                .as_str()
                .expect("value")
                .parse()
                .expect("number");
            let series = raw
                .iter()
                .find(|s| label(s, "vcpu") == vcpu)
                .expect("raw samples of the same series");
            let values = series["values"].as_array().expect("values");
            let t = |v: &serde_json::Value| v[0].as_f64().expect("timestamp");
            let (t0, t1) = (t(&values[0]), t(&values[values.len() - 1]));
            assert!(
                values.len() as u64 >= WINDOW_S - 2,
                "{metric} {vcpu}: {} samples",
                values.len()
            );
            let tid = tid_vcpu
                .iter()
                .find(|(_, v)| v == vcpu)
                .map(|(tid, _)| *tid)
                .expect("tid of vcpu");
            let s = &samples[tids.iter().position(|&x| x == tid).expect("sampled tid")];
            let k0 = at(s, (t0 * 1e9) as u64);
            let k1 = at(s, (t1 * 1e9) as u64);
            let (a, b) = if pick == 0 {
                (k0.0, k1.0)
            } else {
                (k0.1, k1.1)
            };
            let kernel_rate = (b - a) / 1e9 / (t1 - t0);
            let rel = (rate - kernel_rate).abs() / kernel_rate.max(1e-9);
            eprintln!(
                "{metric} vcpu {vcpu} (tid {tid}): prometheus rate {rate:.4}, schedstat {kernel_rate:.4} over [{t0:.3}, {t1:.3}], {:.2}% apart",
                rel * 100.0
            );
            if rel > 0.02 {
                failures.push(format!(
                    "{metric} vcpu {vcpu}: rate {rate:.4} vs schedstat {kernel_rate:.4}"
                ));
            }
        }
    }

    // The short VMM has ended by now: its series are stale (no value at the last scrape).
    assert!(
        reaper.is_finished(),
        "the short VMM should have ended by now"
    );
    let stale = query(
        prom_port,
        &format!("kvmscope_vcpu_run_seconds_total{{domain=\"{short_domain}\"}}"),
        at_time,
    );
    assert!(stale.is_empty(), "ended VM's series still there: {stale:?}");
    let since = (at_time - test_start).ceil() as u64 + 1;
    let had = query(
        prom_port,
        &format!("count_over_time(kvmscope_vcpu_run_seconds_total{{domain=\"{short_domain}\"}}[{since}s])"),
        at_time,
    );
    assert!(!had.is_empty(), "the short VM was scraped while it ran");
    drop(exporter);
    drop(long);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn label_domain_of(port: u16, pid: u32, time: f64) -> String {
    let r = query(port, &format!("kvmscope_vcpu_info{{pid=\"{pid}\"}}"), time);
    r.first()
        .map(|s| label(s, "domain").to_string())
        .unwrap_or_default()
}

/// The exporter as a service starts before any VM: with no KVM user on the host it serves
/// and waits, then picks up the first VM that starts (it failed with "no process on this
/// host holds a KVM vCPU" and a systemd unit would restart it in a loop). It starts before
/// any VM only on an idle host: beside other tests' VMMs it checks that a VMM started later
/// is picked up, and the decision to wait is `target_scan`'s unit test.
#[test]
fn an_exporter_started_before_any_vm_serves_and_picks_up_the_first() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let port = free_port();
    let mut exporter = KillOnDrop(
        kvmscope()
            .args(["exporter", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kvmscope exporter"),
    );
    let scrape = || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .expect("run curl");
        Some(String::from_utf8_lossy(&out.stdout).into_owned()).filter(|m| !m.is_empty())
    };
    poll_until(
        "the exporter serving /metrics",
        Duration::from_secs(60),
        || {
            let ended = exporter.0.try_wait().expect("wait on the exporter");
            assert!(ended.is_none(), "the exporter ended: {ended:?}");
            scrape()
        },
    );
    let vmm = start_vmm(1, 30);
    let pid = vmm.0.id();
    wait_for_vcpus(pid, 1);
    poll_until(
        "the exporter picking up the VMM",
        Duration::from_secs(30),
        || {
            scrape().filter(|m| {
                m.lines().any(|l| {
                    l.starts_with("kvmscope_vcpu_info") && l.contains(&format!("pid=\"{pid}\""))
                })
            })
        },
    );
}
