//! The target flags resolved once, at the edge, into what a live session watches and how it
//! reads the kernel: commands pass a [`Target`] down and never look at the flags again.

use std::path::Path;
use std::time::Duration;

use probes::targets::TargetSpec;

use crate::cli::{ExitsArg, TargetArgs};

/// `--ring-bytes`' default.
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;

/// What a live session watches.
pub enum Watch {
    /// The bundled VMM, started in-process with this scenario: its vCPU threads are known
    /// from the start and live as long as the session.
    Demo(Box<vmm::Scenario>),
    /// Processes of this host (pids, every KVM user, QEMU VMs), found again on each rescan.
    Host(TargetSpec),
}

/// How a live session reads the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The eBPF probes.
    Probes,
    /// Counters mode, asked for with `--no-bpf`.
    CountersAsked,
    /// Counters mode because this process lacks the capabilities to load BPF (CAP_BPF with
    /// CAP_PERFMON, or CAP_SYS_ADMIN), whatever its uid.
    CountersWithoutCapabilities,
}

/// A live session's target, resolved once from the flags.
pub struct Target {
    pub watch: Watch,
    pub reading: Reading,
    /// How often counters mode samples each thread.
    pub sample_every: Duration,
    /// The probes' ring buffer size, bytes.
    pub ring_bytes: u32,
    /// `--exits`; each command sets its default (stream where not given).
    pub exits: Option<ExitsArg>,
    /// Every KVM user with none running yet is not an error but a wait for the first (the
    /// exporter: a service may start before any VM), as `--qemu` without a name always is.
    pub wait_for_vms: bool,
    /// Read each task's group the first time a switch shows it (`Event::TaskGroup`): for
    /// the events a session writes or prints (`record`, `trace`), which a replay's
    /// simulation splits by group. The views and the exporter use none, so they spend no
    /// `/proc` reads on every new task and keep no set of every tid seen.
    pub task_groups: bool,
}

impl Target {
    /// The bundled VMM with `scenario` (a TOML file) or the default demo scenario.
    pub fn demo(
        scenario: Option<&Path>,
        no_bpf: bool,
        sample_every: Duration,
    ) -> anyhow::Result<Target> {
        let scenario = match scenario {
            Some(path) => vmm::Scenario::from_toml_file(path)?,
            None => vmm::Scenario::default_demo(),
        };
        Ok(Target {
            watch: Watch::Demo(Box::new(scenario)),
            reading: reading(no_bpf),
            sample_every,
            ring_bytes: DEFAULT_RING_BYTES,
            exits: None,
            wait_for_vms: false,
            task_groups: false,
        })
    }

    /// Whether the session reads counters instead of loading BPF.
    pub fn counters_mode(&self) -> bool {
        self.reading != Reading::Probes
    }
}

impl TargetArgs {
    /// Whether any target flag was given (`report` reads a trace file otherwise).
    pub fn given(&self) -> bool {
        self.demo || !self.pid.is_empty() || self.all_kvm || self.qemu.is_some()
    }

    /// The target these flags name; with none, every KVM process (also those that start
    /// later): the most useful default for a live session.
    pub fn resolve(&self) -> anyhow::Result<Target> {
        if self.demo {
            let mut target =
                Target::demo(self.scenario.as_deref(), self.no_bpf, self.sample_every)?;
            target.ring_bytes = self.ring_bytes;
            target.exits = self.exits;
            return Ok(target);
        }
        let spec = if !self.pid.is_empty() {
            TargetSpec::Pids(self.pid.clone())
        } else if let Some(selector) = &self.qemu {
            TargetSpec::Qemu {
                selector: Some(selector.clone()).filter(|s| !s.is_empty()),
                qmp: self.qmp.clone(),
            }
        } else {
            TargetSpec::AllKvm
        };
        Ok(Target {
            watch: Watch::Host(spec),
            reading: reading(self.no_bpf),
            sample_every: self.sample_every,
            ring_bytes: self.ring_bytes,
            exits: self.exits,
            wait_for_vms: false,
            task_groups: false,
        })
    }
}

fn reading(no_bpf: bool) -> Reading {
    if no_bpf {
        Reading::CountersAsked
    } else if probes::host::may_load_bpf() {
        Reading::Probes
    } else {
        Reading::CountersWithoutCapabilities
    }
}
