//! The fair policies' parameters, named as in the kernel, with each flavour's defaults.

use super::Flavour;
use crate::params::{check_balance_intervals, ParamError, Params};
use crate::policy::{linux_factor, tick_ns};

/// `MAX_SHARES`: the most `cpu.shares` a task group may have (`1 << 18`).
const MAX_SHARES: u64 = 1 << 18;

/// Parameters, named as in the kernel (`sysctl_sched_*` without the prefix).
#[derive(Clone, Debug)]
pub struct FairParams {
    pub latency: u64,
    pub min_granularity: u64,
    pub wakeup_granularity: u64,
    pub nr_latency: u64,
    pub base_slice: u64,
    pub tick: u64,
    pub migration_cost: u64,
    pub balance_interval: u64,
    /// Periodic balancing while some pCPU idles (`sd->balance_interval` without busy_factor).
    pub idle_balance_interval: u64,
    /// Each pCPU balances for itself from its own tick (`rebalance_domains`): pulls onto
    /// itself only, with its own `nr_balance_failed` and `balance_interval` (doubled while
    /// balanced up to twice the domain's pCPU count in ms, times `busy_factor` while busy),
    /// by the kernel's group types (`find_busiest_group`). `false`: the old rule, one
    /// balance of the whole host every `balance_interval` (or `idle_balance_interval` while
    /// a pCPU idles) from the busiest to the least loaded pCPU, one failure count for all.
    pub balance_per_pcpu: bool,
    /// `sd->busy_factor`: a busy pCPU balances this many times less often.
    pub busy_factor: u64,
    /// Periodic balancing also by PELT load (`policy/load_balance.rs`), not only by count.
    pub balance_load: bool,
    /// Periodic pull by runnable count also onto a busy pCPU (the old rule). The kernel's
    /// count rule (`calculate_imbalance`'s `migrate_task` for a local group with spare
    /// capacity) moves nothing from a pCPU that is not idle: `sibling_imbalance` (6.6+)
    /// returns 0 for `CPU_NOT_IDLE`, and `find_busiest_group` calls a busy pCPU balanced
    /// unless the busiest is overloaded, when a pCPU that runs a spinning vCPU is
    /// overloaded too and the balance is by load.
    pub balance_count_busy: bool,
    /// Each thread's PELT load starts full, as the kernel starts a new task's
    /// (`init_entity_runnable_average`: "seen as heavy tasks until they get a chance to
    /// stabilize"); `false`: from 0 (the old start).
    pub pelt_new_full: bool,
    pub gentle_fair_sleepers: bool,
    pub start_debit: bool,
    pub place_lag: bool,
    pub run_to_parity: bool,
    /// Task groups (`groups.rs`).
    pub groups: GroupMode,
    /// The background group's `tg->shares` with `groups=true` (1024 for one autogroup;
    /// several busy sessions weigh as many times that).
    pub background_shares: u64,
    /// Writes each periodic balance (every pCPU's PELT load, its background stand-ins' part,
    /// what runs and waits there, the failure count, what the balance found and moved) to
    /// stderr, one line each: a debugging aid for comparing the balancer with a kernel's.
    pub balance_trace: bool,
}

/// `--param groups=`: which task groups the fair policies schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupMode {
    /// `false`: every thread on its pCPU's root queue (the flat model).
    Off,
    /// `true`: each process's tracked threads in a group, all the background in another.
    PerProcess,
    /// `auto` (the default): the groups the recording names (its task-group records: each
    /// tracked thread's and each background stand-in's autogroup or cgroup, with its
    /// weight); flat when it has none (recordings from before format 4).
    Recorded,
}

impl FairParams {
    pub fn new(flavour: Flavour, p: &Params, ncpus: u32) -> Result<FairParams, ParamError> {
        let f = linux_factor(ncpus);
        let name = flavour.name();
        let ncpus = u64::from(ncpus);
        // What both flavours read; each flavour's own parameters below.
        let mut fp = FairParams {
            latency: 0,
            min_granularity: 0,
            wakeup_granularity: 0,
            nr_latency: 8,
            base_slice: 0,
            tick: tick_ns(name, p, 250)?,
            migration_cost: p.ns(name, "migration_cost", 500_000)?,
            balance_interval: 16_000_000 * ncpus,
            idle_balance_interval: 1_000_000 * ncpus,
            balance_per_pcpu: p.bool(name, "balance_per_pcpu", false)?,
            busy_factor: 16,
            balance_load: p.bool(name, "balance_load", true)?,
            balance_count_busy: p.bool(name, "balance_count_busy", false)?,
            pelt_new_full: p.bool(name, "pelt_new_full", true)?,
            gentle_fair_sleepers: false,
            start_debit: false,
            place_lag: false,
            run_to_parity: false,
            groups: [GroupMode::Off, GroupMode::PerProcess, GroupMode::Recorded][p.choice(
                name,
                "groups",
                &[
                    &["0", "false", "off", "no"],
                    &["1", "true", "on", "yes"],
                    &["auto"],
                ],
                2,
                "true, false or auto",
            )?],
            background_shares: 1024,
            balance_trace: p.bool(name, "balance_trace", false)?,
        };
        match flavour {
            Flavour::Cfs => {
                fp.latency = p.ns(name, "latency", 6_000_000 * f)?;
                fp.min_granularity = p.ns(name, "min_granularity", 750_000 * f)?;
                fp.wakeup_granularity = p.ns(name, "wakeup_granularity", 1_000_000 * f)?;
                fp.nr_latency = p.u64(name, "nr_latency", 8)?.max(1);
                fp.gentle_fair_sleepers = p.bool(name, "gentle_fair_sleepers", true)?;
                fp.start_debit = p.bool(name, "start_debit", true)?;
            }
            Flavour::Eevdf => {
                // 0.70 ms x factor since v6.15 (commit 2ae891b82695); this host runs 6.18.
                fp.base_slice = p.ns(name, "base_slice", 700_000 * f)?;
                fp.place_lag = p.bool(name, "place_lag", true)?;
                fp.run_to_parity = p.bool(name, "run_to_parity", true)?;
            }
        }
        // Each balancing rule reads its own timing: per pCPU the kernel's busy factor (its
        // intervals come from the pCPU count, as `sd_init`'s), host-wide two intervals.
        if fp.balance_per_pcpu {
            fp.busy_factor = p.u64(name, "busy_factor", 16)?;
            p.unread_without("balance_interval", "balance_per_pcpu=false");
            p.unread_without("idle_balance_interval", "balance_per_pcpu=false");
        } else {
            fp.balance_interval = p.ns(name, "balance_interval", fp.balance_interval)?;
            fp.idle_balance_interval =
                p.ns(name, "idle_balance_interval", fp.idle_balance_interval)?;
            p.unread_without("busy_factor", "balance_per_pcpu=true");
        }
        check_balance_intervals(fp.balance_interval, fp.idle_balance_interval)?;
        if fp.busy_factor == 0 {
            return Err(ParamError::Invalid(
                "--param busy_factor=0: a busy pCPU's balance interval must be at least its idle one (1 or more)".into(),
            ));
        }
        // Read only with groups: without them it would change nothing, and say so nowhere.
        if fp.groups == GroupMode::PerProcess {
            fp.background_shares = p.u64(name, "background_shares", 1024)?;
        } else {
            p.unread_without("background_shares", "groups=true");
        }
        if !(2..=MAX_SHARES).contains(&fp.background_shares) {
            return Err(ParamError::Invalid(format!(
                "--param background_shares={}: a group's shares must be 2..={MAX_SHARES}",
                fp.background_shares
            )));
        }
        Ok(fp)
    }
}
