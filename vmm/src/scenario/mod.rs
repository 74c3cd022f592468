//! What to run: VMs, their vCPUs, each vCPU's guest workload and scheduling knobs.
//!
//! A [`Scenario`] comes from a TOML file, from [`Scenario::uniform`] (the `--vms/--vcpus`
//! flags) or from [`Scenario::default_demo`]; `--pin`/`--nice` specs are applied on top with
//! [`Scenario::apply_pin_spec`] / [`Scenario::apply_nice_spec`]. [`Scenario::plan`] checks it
//! and resolves it into one [`VcpuPlan`] per vCPU, which is all the VMM itself looks at.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::guest::MAX_VCPUS_PER_VM;

/// Default off-CPU gap threshold of the guests' gap rings.
pub const DEFAULT_GAP_THRESHOLD_US: u64 = 10;
/// Default K of the `exits` workload: one port-I/O exit every K work units (a unit takes
/// about 50 ns natively, so this is a few hundred exits per second).
pub const DEFAULT_EXIT_EVERY: u64 = 100_000;
/// Default burst of the `sleepy` workload.
pub const DEFAULT_BURST_US: u64 = 500;
/// Default sleep of the `sleepy` workload.
pub const DEFAULT_SLEEP_US: u64 = 2_000;
/// Longest sleep a `sleepy` guest may ask for: keeps shutdown prompt.
/// The most VMs one scenario may run.
pub const MAX_VMS: usize = 64;

pub const MAX_SLEEP_US: u64 = 1_000_000;

/// What a vCPU's guest program does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// CPU-bound work, no exits; records every off-CPU gap.
    Spin,
    /// `spin` plus a port-I/O exit every K work units.
    Exits,
    /// A burst of work, then a port-I/O request that makes the VMM block the thread.
    Sleepy,
    /// `spin`, `exits` and `sleepy` in turn over the vCPUs (resolved per vCPU).
    Mixed,
    /// Executes an invalid instruction with no IDT: a triple fault. For checking that a
    /// crashing guest is reported clearly and the other VMs are stopped cleanly.
    TripleFault,
}

impl Workload {
    pub const NAMES: &'static str = "spin, exits, sleepy, mixed or triple-fault";

    pub fn name(self) -> &'static str {
        match self {
            Workload::Spin => "spin",
            Workload::Exits => "exits",
            Workload::Sleepy => "sleepy",
            Workload::Mixed => "mixed",
            Workload::TripleFault => "triple-fault",
        }
    }

    /// The concrete workload of the vCPU with this scenario-wide index (`mixed` rotates).
    fn resolve(self, global_vcpu: usize) -> Workload {
        match self {
            Workload::Mixed => [Workload::Spin, Workload::Exits, Workload::Sleepy][global_vcpu % 3],
            w => w,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spin" => Ok(Workload::Spin),
            "exits" => Ok(Workload::Exits),
            "sleepy" => Ok(Workload::Sleepy),
            "mixed" => Ok(Workload::Mixed),
            "triple-fault" => Ok(Workload::TripleFault),
            _ => Err(ScenarioError::Value(format!(
                "unknown workload `{s}` (expected {})",
                Workload::NAMES
            ))),
        }
    }
}

/// A set of host CPUs, written `0`, `0-3`, `0,2` or `0+2` (`+` because the command line
/// already splits on commas).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CpuListRepr", into = "String")]
pub struct CpuList(Vec<u32>);

impl CpuList {
    pub fn new(mut cpus: Vec<u32>) -> CpuList {
        cpus.sort_unstable();
        cpus.dedup();
        CpuList(cpus)
    }

    pub fn cpus(&self) -> &[u32] {
        &self.0
    }
}

impl FromStr for CpuList {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ScenarioError::Value(format!(
                "invalid cpu list `{s}` (expected e.g. `0`, `0-3` or `0+2`)"
            ))
        };
        let mut cpus = Vec::new();
        for part in s.split([',', '+']) {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: u32 = a.trim().parse().map_err(|_| bad())?;
                    let b: u32 = b.trim().parse().map_err(|_| bad())?;
                    if a > b || b - a > 4096 {
                        return Err(bad());
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(part.parse().map_err(|_| bad())?),
            }
        }
        Ok(CpuList::new(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl From<CpuList> for String {
    fn from(c: CpuList) -> String {
        c.to_string()
    }
}

/// TOML accepts `pin = 1`, `pin = "0-1"` or `pin = [0, 1]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum CpuListRepr {
    One(u32),
    Many(Vec<u32>),
    Text(String),
}

impl TryFrom<CpuListRepr> for CpuList {
    type Error = ScenarioError;

    fn try_from(r: CpuListRepr) -> Result<Self, Self::Error> {
        match r {
            CpuListRepr::One(c) => Ok(CpuList::new(vec![c])),
            CpuListRepr::Many(v) => Ok(CpuList::new(v)),
            CpuListRepr::Text(s) => s.parse(),
        }
    }
}

/// Per-vCPU overrides inside a VM (`[[vm.vcpu]]` in TOML, `vmN:vcpuM=` on the command line).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuOverride {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<CpuList>,
}

/// One VM of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub workload: Workload,
    /// `exits`: one port-I/O exit every this many work units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_every: Option<u64>,
    /// `sleepy`: length of each burst of work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_us: Option<u64>,
    /// `sleepy`: how long the VMM blocks the thread after each burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_us: Option<u64>,
    /// Nice value of all this VM's vCPU threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    /// CPU affinity of all this VM's vCPU threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<CpuList>,
    #[serde(default, rename = "vcpu", skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<VcpuOverride>,
}

impl VmSpec {
    pub fn new(name: impl Into<String>, vcpus: u32, workload: Workload) -> VmSpec {
        VmSpec {
            name: name.into(),
            vcpus,
            workload,
            exit_every: None,
            burst_us: None,
            sleep_us: None,
            nice: None,
            pin: None,
            overrides: Vec::new(),
        }
    }

    fn override_mut(&mut self, index: u32) -> &mut VcpuOverride {
        if let Some(i) = self.overrides.iter().position(|o| o.index == index) {
            return &mut self.overrides[i];
        }
        self.overrides.push(VcpuOverride {
            index,
            ..VcpuOverride::default()
        });
        self.overrides.last_mut().expect("just pushed")
    }
}

/// Everything the VMM runs. Serde-able: this is the TOML scenario file format.
///
/// ```toml
/// migrate_every_ms = 200      # optional
/// gap_threshold_us = 10       # optional
///
/// [[vm]]
/// name = "batch"
/// vcpus = 2
/// workload = "spin"           # spin | exits | sleepy | mixed | triple-fault
/// pin = "0-1"                 # optional: 1, "0-1", "0+2" or [0, 1]
/// nice = 0                    # optional
///
/// [[vm]]
/// name = "interactive"
/// vcpus = 2
/// workload = "sleepy"
/// burst_us = 500
/// sleep_us = 2000
///
/// [[vm.vcpu]]                 # optional per-vCPU overrides
/// index = 1
/// nice = -5
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(rename = "vm")]
    pub vms: Vec<VmSpec>,
    /// Rotate every vCPU's affinity over its allowed CPUs this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_every_ms: Option<u64>,
    #[serde(default = "default_gap_threshold_us")]
    pub gap_threshold_us: u64,
    /// Leave out the PVM native-execution MSR, so that on PVM the guest is emulated
    /// instruction by instruction. Only useful to measure what native execution buys.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emulate: bool,
}

fn default_gap_threshold_us() -> u64 {
    DEFAULT_GAP_THRESHOLD_US
}

/// One vCPU as the VMM will run it: workload concrete, knobs resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuPlan {
    pub vm_index: u32,
    pub vm_name: String,
    pub index: u32,
    pub workload: Workload,
    pub exit_every: u64,
    pub burst_us: u64,
    pub sleep_us: u64,
    pub nice: Option<i32>,
    pub pin: Option<CpuList>,
}

/// A scenario file or a `--pin`/`--nice`/`--workload` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("invalid scenario {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Value(String),
}

/// Which vCPUs a `--pin`/`--nice` spec addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnobTarget {
    All,
    /// `vmN` (index) or a VM name.
    Vm(String),
    Vcpu(String, u32),
}

/// A parsed `TARGET=VALUE` spec, e.g. `vm0:vcpu1=1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnobSpec<T> {
    pub target: KnobTarget,
    pub value: T,
}

impl<T: FromStr<Err = ScenarioError>> KnobSpec<T> {
    /// Parses `all=V`, `vmN=V`, `NAME=V`, `vmN:vcpuM=V` or `NAME:vcpuM=V`.
    pub fn parse(flag: &str, spec: &str) -> Result<Self, ScenarioError> {
        let bad = |why: String| {
            ScenarioError::Value(format!(
                "invalid {flag} value `{spec}`: {why} (expected `all=V`, `vmN=V` or `vmN:vcpuM=V`)"
            ))
        };
        let (target, value) = spec
            .split_once('=')
            .ok_or_else(|| bad("missing `=`".into()))?;
        let target = target.trim();
        let target = if target == "all" {
            KnobTarget::All
        } else if let Some((vm, vcpu)) = target.split_once(':') {
            let idx = vcpu
                .strip_prefix("vcpu")
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| bad(format!("`{vcpu}` is not `vcpuM`")))?;
            if vm.is_empty() {
                return Err(bad("empty VM name".into()));
            }
            KnobTarget::Vcpu(vm.to_string(), idx)
        } else if target.is_empty() {
            return Err(bad("empty target".into()));
        } else {
            KnobTarget::Vm(target.to_string())
        };
        let value = value.trim().parse::<T>().map_err(|e| bad(e.to_string()))?;
        Ok(KnobSpec { target, value })
    }
}

/// A nice value, -20..=19.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nice(pub i32);

impl FromStr for Nice {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<i32>() {
            Ok(n) if (-20..=19).contains(&n) => Ok(Nice(n)),
            _ => Err(ScenarioError::Value(format!(
                "nice `{s}` is not a number from -20 to 19"
            ))),
        }
    }
}

impl Scenario {
    /// `vms` VMs named `vm0`, `vm1`, ... with `vcpus` vCPUs each, all with `workload`
    /// (`mixed` rotates spin/exits/sleepy over the vCPUs).
    pub fn uniform(vms: u32, vcpus: u32, workload: Workload) -> Scenario {
        Scenario {
            vms: (0..vms)
                .map(|v| VmSpec::new(format!("vm{v}"), vcpus, workload))
                .collect(),
            migrate_every_ms: None,
            gap_threshold_us: DEFAULT_GAP_THRESHOLD_US,
            emulate: false,
        }
    }

    /// The overcommitted scenario `kvmscope demo` shows: 6 vCPUs on a small host.
    /// Two batch vCPUs, two interactive (sleepy) ones, a low-priority one at nice 10 and one
    /// that exits to the VMM regularly; affinities rotate so migrations happen.
    pub fn default_demo() -> Scenario {
        let mut batch = VmSpec::new("batch", 3, Workload::Spin);
        batch.overrides.push(VcpuOverride {
            index: 2,
            workload: Some(Workload::Exits),
            ..VcpuOverride::default()
        });
        let mut lowprio = VmSpec::new("lowprio", 1, Workload::Spin);
        lowprio.nice = Some(10);
        Scenario {
            vms: vec![
                batch,
                VmSpec::new("interactive", 2, Workload::Sleepy),
                lowprio,
            ],
            migrate_every_ms: Some(500),
            gap_threshold_us: DEFAULT_GAP_THRESHOLD_US,
            emulate: false,
        }
    }

    /// Reads a TOML scenario; errors name the file and the offending value.
    pub fn from_toml_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|err| ScenarioError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        let scenario = Scenario::from_toml_str(&text).map_err(|message| ScenarioError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(scenario)
    }

    /// Parses and checks TOML text; the error is one line naming what is wrong.
    pub fn from_toml_str(text: &str) -> Result<Scenario, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines (it quotes the source); keep the first
            // line and say where.
            let msg = e
                .message()
                .lines()
                .next()
                .unwrap_or("parse error")
                .to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        scenario.plan().map_err(|e| e.to_string())?;
        Ok(scenario)
    }

    /// Sets the affinity of the vCPUs a `--pin` spec names (`all=0`, `vm1=0-1`,
    /// `vm0:vcpu1=1`). Later specs override earlier ones.
    pub fn apply_pin_spec(&mut self, spec: &str) -> Result<(), ScenarioError> {
        let k = KnobSpec::<CpuList>::parse("--pin", spec)?;
        self.apply(
            k.target,
            &format!("--pin value `{spec}`"),
            |vm| vm.pin = Some(k.value.clone()),
            |o| o.pin = Some(k.value.clone()),
        )
    }

    /// Sets the nice value of the vCPUs a `--nice` spec names (`vm1=10`, `vm0:vcpu0=-5`).
    pub fn apply_nice_spec(&mut self, spec: &str) -> Result<(), ScenarioError> {
        let k = KnobSpec::<Nice>::parse("--nice", spec)?;
        let n = k.value.0;
        self.apply(
            k.target,
            &format!("--nice value `{spec}`"),
            |vm| vm.nice = Some(n),
            |o| o.nice = Some(n),
        )
    }

    /// `what` names the spec in errors (`--pin value `vm0=1``).
    fn apply(
        &mut self,
        target: KnobTarget,
        what: &str,
        on_vm: impl Fn(&mut VmSpec),
        on_vcpu: impl Fn(&mut VcpuOverride),
    ) -> Result<(), ScenarioError> {
        match target {
            KnobTarget::All => {
                for vm in &mut self.vms {
                    on_vm(vm);
                    // A later `all=` wins over earlier per-vCPU settings too.
                    for o in &mut vm.overrides {
                        on_vcpu(o);
                    }
                }
            }
            KnobTarget::Vm(sel) => {
                let i = self.find_vm(&sel, what)?;
                let vm = &mut self.vms[i];
                on_vm(vm);
                for o in &mut vm.overrides {
                    on_vcpu(o);
                }
            }
            KnobTarget::Vcpu(sel, idx) => {
                let i = self.find_vm(&sel, what)?;
                let vm = &mut self.vms[i];
                if idx >= vm.vcpus {
                    return Err(ScenarioError::Value(format!(
                        "invalid {what}: VM {} has no vcpu{idx} (it has {} vCPUs)",
                        vm.name, vm.vcpus
                    )));
                }
                on_vcpu(vm.override_mut(idx));
            }
        }
        Ok(())
    }

    /// A VM by name, or by `vmN` index when no VM has that name.
    fn find_vm(&self, sel: &str, what: &str) -> Result<usize, ScenarioError> {
        if let Some(i) = self.vms.iter().position(|v| v.name == sel) {
            return Ok(i);
        }
        if let Some(i) = sel.strip_prefix("vm").and_then(|n| n.parse::<usize>().ok()) {
            if i < self.vms.len() {
                return Ok(i);
            }
        }
        let names: Vec<&str> = self.vms.iter().map(|v| v.name.as_str()).collect();
        let by_index = if names
            .iter()
            .enumerate()
            .all(|(i, n)| *n == format!("vm{i}"))
        {
            String::new()
        } else {
            format!(", or vm0 to vm{}", names.len() - 1)
        };
        Err(ScenarioError::Value(format!(
            "invalid {what}: no VM `{sel}` (VMs: {}{by_index})",
            names.join(", ")
        )))
    }

    /// Sets K of every `exits` vCPU.
    pub fn set_exit_every(&mut self, k: u64) {
        for vm in &mut self.vms {
            vm.exit_every = Some(k);
        }
    }

    /// Sets the burst and/or sleep of every `sleepy` vCPU.
    pub fn set_sleepy(&mut self, burst_us: Option<u64>, sleep_us: Option<u64>) {
        for vm in &mut self.vms {
            vm.burst_us = burst_us.or(vm.burst_us);
            vm.sleep_us = sleep_us.or(vm.sleep_us);
        }
    }

    /// Checks the scenario and resolves it into one plan per vCPU, in VM then vCPU order.
    pub fn plan(&self) -> Result<Vec<VcpuPlan>, ScenarioError> {
        // Every VM knob's range check and message, in one place.
        fn vm_knob_in_range<T: PartialOrd + std::fmt::Display>(
            vm: &str,
            knob: String,
            value: T,
            range: std::ops::RangeInclusive<T>,
        ) -> Result<(), ScenarioError> {
            if range.contains(&value) {
                return Ok(());
            }
            let (lo, hi) = range.into_inner();
            Err(ScenarioError::Value(format!(
                "VM {vm}: {knob} is out of range ({lo} to {hi})"
            )))
        }
        let bad = |m: String| Err(ScenarioError::Value(m));
        if self.vms.is_empty() {
            return bad("the scenario has no VMs (add a [[vm]] table)".into());
        }
        if self.vms.len() > MAX_VMS {
            return bad(format!(
                "{} VMs is out of range (1 to {MAX_VMS})",
                self.vms.len()
            ));
        }
        if self.gap_threshold_us == 0 || self.gap_threshold_us > 1_000_000 {
            return bad(format!(
                "gap_threshold_us {} is out of range (1 to 1000000)",
                self.gap_threshold_us
            ));
        }
        if self.migrate_every_ms == Some(0) {
            return bad("migrate_every_ms must be at least 1".into());
        }
        let mut names = BTreeMap::new();
        let mut plans = Vec::new();
        for (v, vm) in self.vms.iter().enumerate() {
            if vm.name.is_empty() || vm.name.len() > 64 || vm.name.chars().any(char::is_control) {
                return bad(format!(
                    "VM {v}: name must be 1 to 64 characters, none of them a control character"
                ));
            }
            if names.insert(vm.name.clone(), v).is_some() {
                return bad(format!("two VMs are named `{}`", vm.name));
            }
            let vcpus = vm.vcpus;
            vm_knob_in_range(
                &vm.name,
                format!("vcpus = {vcpus}"),
                vcpus,
                1..=MAX_VCPUS_PER_VM,
            )?;
            let exit_every = vm.exit_every.unwrap_or(DEFAULT_EXIT_EVERY);
            if exit_every == 0 {
                return bad(format!("VM {}: exit_every must be at least 1", vm.name));
            }
            let burst_us = vm.burst_us.unwrap_or(DEFAULT_BURST_US);
            let sleep_us = vm.sleep_us.unwrap_or(DEFAULT_SLEEP_US);
            let burst = format!("burst_us = {burst_us}");
            vm_knob_in_range(&vm.name, burst, burst_us, 1..=10_000_000)?;
            let sleep = format!("sleep_us = {sleep_us}");
            vm_knob_in_range(&vm.name, sleep, sleep_us, 1..=MAX_SLEEP_US)?;
            for n in vm
                .nice
                .iter()
                .chain(vm.overrides.iter().filter_map(|o| o.nice.as_ref()))
            {
                vm_knob_in_range(&vm.name, format!("nice {n}"), *n, -20..=19)?;
            }
            for pin in vm
                .pin
                .iter()
                .chain(vm.overrides.iter().filter_map(|o| o.pin.as_ref()))
            {
                if pin.cpus().is_empty() {
                    return bad(format!("VM {}: empty pin list", vm.name));
                }
            }
            for o in &vm.overrides {
                if o.index >= vm.vcpus {
                    return bad(format!(
                        "VM {}: override for vcpu {} but the VM has {} vCPUs",
                        vm.name, o.index, vm.vcpus
                    ));
                }
            }
            for c in 0..vm.vcpus {
                let o = vm.overrides.iter().find(|o| o.index == c);
                let workload = o.and_then(|o| o.workload).unwrap_or(vm.workload);
                plans.push(VcpuPlan {
                    vm_index: v as u32,
                    vm_name: vm.name.clone(),
                    index: c,
                    workload: workload.resolve(plans.len()),
                    exit_every,
                    burst_us,
                    sleep_us,
                    nice: o.and_then(|o| o.nice).or(vm.nice),
                    pin: o.and_then(|o| o.pin.clone()).or_else(|| vm.pin.clone()),
                });
            }
        }
        Ok(plans)
    }
}

#[cfg(test)]
mod tests;
