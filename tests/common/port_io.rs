//! Port I/O exits counted two ways in one `trace --exits both` run, as (tid, port, rw) ->
//! count: the streamed `pio` lines and the kernel's aggregates in the summary (issue #15). The
//! kernel matrix and this host's privileged test compare them.

use std::collections::BTreeMap;

use serde_json::Value;

pub type PortIoKey = (u64, u64, u64);

fn key(v: &Value) -> PortIoKey {
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("no integer {k} in {v}"))
    };
    (n("tid"), n("port"), n("rw"))
}

/// The streamed `pio` lines by (tid, port, rw).
pub fn streamed(lines: &[Value]) -> BTreeMap<PortIoKey, u64> {
    let mut out = BTreeMap::new();
    for e in lines.iter().filter(|e| e["type"] == "pio") {
        *out.entry(key(e)).or_default() += 1;
    }
    out
}

/// The kernel's totals in a summary's `port_io_aggregates`, by (tid, port, rw).
pub fn aggregated(summary: &Value) -> BTreeMap<PortIoKey, u64> {
    let mut out = BTreeMap::new();
    for a in summary["port_io_aggregates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        *out.entry(key(a)).or_default() += a["count"].as_u64().unwrap_or(0);
    }
    out
}
