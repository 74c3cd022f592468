//! What the lab compares from a `kvmscope simulate --policy POLICY --json` document: per
//! vCPU, the recorded column's and the policy's CPU share and run-queue wait p50. Read here
//! once for the kernel matrix's replay step and the `repeat` example.

use serde_json::Value;

use crate::{LabError, Result};

/// One vCPU as recorded and as `simulate` replayed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayedVcpu {
    pub label: String,
    /// CPU shares in percent.
    pub recorded_share: f64,
    pub replayed_share: f64,
    pub recorded_wait_p50_us: f64,
    pub replayed_wait_p50_us: f64,
}

impl ReplayedVcpu {
    /// Percentage points between the recorded and the replayed CPU share.
    pub fn share_points(&self) -> f64 {
        (self.recorded_share - self.replayed_share).abs()
    }
}

/// The recorded column and `policy`'s, vCPU by vCPU in the recorded column's order. Refuses
/// a document of other columns, and a vCPU that is not in both.
pub fn vcpus(doc: &Value, policy: &str) -> Result<Vec<ReplayedVcpu>> {
    let bad = |what: String| LabError::Results(format!("simulate --json: {what}"));
    let columns = doc["columns"].as_array().map(Vec::as_slice);
    let Some([recorded, replayed]) = columns else {
        return Err(bad(format!(
            "expected the recorded column and {policy}'s, found {}",
            columns.map_or(0, <[Value]>::len)
        )));
    };
    if recorded["name"] != "recorded" || replayed["name"] != policy {
        return Err(bad(format!(
            "columns {} and {}, not recorded and {policy}",
            recorded["name"], replayed["name"]
        )));
    }
    let rv = recorded["vcpus"]
        .as_array()
        .ok_or_else(|| bad("the recorded column without vcpus".into()))?;
    let sv = replayed["vcpus"]
        .as_array()
        .ok_or_else(|| bad(format!("{policy}'s column without vcpus")))?;
    if rv.len() != sv.len() {
        return Err(bad(format!(
            "{} vCPUs recorded, {} replayed",
            rv.len(),
            sv.len()
        )));
    }
    let figure = |v: &Value, key: &str| {
        v[key]
            .as_f64()
            .ok_or_else(|| bad(format!("vCPU {} without {key}", v["label"])))
    };
    rv.iter()
        .map(|r| {
            let label = r["label"]
                .as_str()
                .ok_or_else(|| bad("a vCPU without a label".into()))?;
            let s = sv
                .iter()
                .find(|s| s["label"] == label)
                .ok_or_else(|| bad(format!("{label} recorded but not replayed")))?;
            Ok(ReplayedVcpu {
                label: label.to_string(),
                recorded_share: figure(r, "cpu_share")? * 100.0,
                replayed_share: figure(s, "cpu_share")? * 100.0,
                recorded_wait_p50_us: figure(r, "wait_p50_us")?,
                replayed_wait_p50_us: figure(s, "wait_p50_us")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpu(label: &str, share: f64, wait: f64) -> Value {
        serde_json::json!({"label": label, "cpu_share": share, "wait_p50_us": wait})
    }

    #[test]
    fn vcpus_pair_by_label() {
        let doc = serde_json::json!({"columns": [
            {"name": "recorded", "vcpus": [vcpu("a", 0.25, 100.0), vcpu("b", 0.5, 40.0)]},
            {"name": "cfs", "vcpus": [vcpu("b", 0.45, 80.0), vcpu("a", 0.25, 50.0)]},
        ]});
        let v = vcpus(&doc, "cfs").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (
                v[1].label.as_str(),
                v[1].recorded_wait_p50_us,
                v[1].replayed_wait_p50_us
            ),
            ("b", 40.0, 80.0)
        );
        assert!((v[1].share_points() - 5.0).abs() < 1e-9);
        assert_eq!(v[0].share_points(), 0.0);
    }

    #[test]
    fn other_documents_are_refused() {
        let two = |a: Value, b: Value| {
            serde_json::json!({"columns": [
                {"name": "recorded", "vcpus": a},
                {"name": "cfs", "vcpus": b},
            ]})
        };
        let err = |doc: Value, policy: &str| vcpus(&doc, policy).unwrap_err().to_string();
        let ok = two(
            vec![vcpu("a", 0.1, 1.0)].into(),
            vec![vcpu("a", 0.1, 1.0)].into(),
        );
        assert!(err(ok, "eevdf").contains("not recorded and eevdf"));
        let missing = two(
            vec![vcpu("a", 0.1, 1.0)].into(),
            vec![vcpu("b", 0.1, 1.0)].into(),
        );
        assert!(err(missing, "cfs").contains("a recorded but not replayed"));
        let no_wait = two(
            vec![serde_json::json!({"label": "a", "cpu_share": 0.1})].into(),
            vec![vcpu("a", 0.1, 1.0)].into(),
        );
        assert!(err(no_wait, "cfs").contains("without wait_p50_us"));
        assert!(err(serde_json::json!({"columns": []}), "cfs").contains("found 0"));
    }
}
