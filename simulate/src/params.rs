//! `--param name=value`: every constant of every policy is a named parameter with its source's
//! default. A name may be prefixed with a policy (`cfs.latency=12ms`) to set it for that one
//! only, and per-VM parameters take the VM as a suffix (`credit.cap.vm1=50`).
//!
//! Each policy reads what it knows through [`Params`]; a name that no selected policy read is
//! an error naming the parameters that exist, so a typo never goes unnoticed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::wake_cost::DispatchDelay;

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("--param {0:?} is not NAME=VALUE")]
    Syntax(String),
    #[error("--param {name}: {value:?} is not {want}")]
    Value {
        name: String,
        value: String,
        want: &'static str,
    },
    #[error("--param {name} is not a parameter of {policies} (known: {known})")]
    Unknown {
        name: String,
        policies: String,
        known: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What a recording says that stands in for a source's default: the host's tick rate (its
/// header's `hz`, when the recorder could read it) and the dispatch delay measured from its
/// wakeups ([`crate::wake_cost`]). A given `--param` still wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordedDefaults {
    pub hz: Option<u64>,
    pub dispatch: DispatchDelay,
}

/// Parameters given on the command line, and which of them a policy has read.
#[derive(Debug, Default)]
pub struct Params {
    given: BTreeMap<String, String>,
    recorded: RecordedDefaults,
    /// Given names some policy read.
    used: RefCell<BTreeSet<String>>,
    /// Every name policies asked for (for the error message).
    known: RefCell<BTreeSet<String>>,
    /// Per-VM names a policy read (`sedf.slice.vm1`), with their VM, for [`Params::check_vms`].
    per_vm_read: RefCell<BTreeMap<String, String>>,
    /// Names a policy reads only under another setting, with that setting
    /// ([`Params::unread_without`]).
    needs: RefCell<BTreeMap<String, String>>,
}

impl Params {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Params, ParamError> {
        let mut given = BTreeMap::new();
        for it in items {
            let it = it.as_ref();
            let Some((k, v)) = it.split_once('=') else {
                return Err(ParamError::Syntax(it.to_string()));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(ParamError::Syntax(it.to_string()));
            }
            given.insert(k.to_string(), v.trim().to_string());
        }
        Ok(Params {
            given,
            ..Params::default()
        })
    }

    /// Every `--param` given, as (name, value), by name.
    pub fn given(&self) -> impl Iterator<Item = (&str, &str)> {
        self.given.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Takes the recording's defaults (see [`RecordedDefaults`]).
    pub fn with_recorded(mut self, recorded: RecordedDefaults) -> Params {
        self.recorded = recorded;
        self
    }

    pub fn recorded(&self) -> RecordedDefaults {
        self.recorded
    }

    /// The value for `policy`'s `name`: `policy.name` wins over plain `name`.
    fn raw(&self, policy: &str, name: &str) -> Option<(String, &str)> {
        self.known.borrow_mut().insert(name.to_string());
        for key in [format!("{policy}.{name}"), name.to_string()] {
            if let Some(v) = self.given.get(&key) {
                self.used.borrow_mut().insert(key.clone());
                return Some((key, v.as_str()));
            }
        }
        None
    }

    /// A duration: a number with a unit (`ns`, `us`, `ms`, `s`), or plain ns.
    pub fn ns(&self, policy: &str, name: &str, default: u64) -> Result<u64, ParamError> {
        let Some((key, v)) = self.raw(policy, name) else {
            return Ok(default);
        };
        parse_ns(v).ok_or_else(|| ParamError::Value {
            name: key,
            value: v.to_string(),
            want: "a duration (e.g. 750us, 3ms, 0.5s)",
        })
    }

    pub fn u64(&self, policy: &str, name: &str, default: u64) -> Result<u64, ParamError> {
        let Some((key, v)) = self.raw(policy, name) else {
            return Ok(default);
        };
        v.parse().map_err(|_| ParamError::Value {
            name: key,
            value: v.to_string(),
            want: "a non-negative integer",
        })
    }

    pub fn bool(&self, policy: &str, name: &str, default: bool) -> Result<bool, ParamError> {
        let Some((key, v)) = self.raw(policy, name) else {
            return Ok(default);
        };
        match v {
            "1" | "true" | "on" | "yes" => Ok(true),
            "0" | "false" | "off" | "no" => Ok(false),
            _ => Err(ParamError::Value {
                name: key,
                value: v.to_string(),
                want: "true or false",
            }),
        }
    }

    /// One of `choices` (`want` says which, for the error): its index, or `default`'s.
    pub fn choice(
        &self,
        policy: &str,
        name: &str,
        choices: &[&[&str]],
        default: usize,
        want: &'static str,
    ) -> Result<usize, ParamError> {
        let Some((key, v)) = self.raw(policy, name) else {
            return Ok(default);
        };
        choices
            .iter()
            .position(|names| names.contains(&v))
            .ok_or_else(|| ParamError::Value {
                name: key,
                value: v.to_string(),
                want,
            })
    }

    /// Per-VM values: every given `policy.name.VM` or `name.VM`, as (VM, value).
    pub fn per_vm<T>(
        &self,
        policy: &str,
        name: &str,
        parse: impl Fn(&Params, &str, &str) -> Result<T, ParamError>,
    ) -> Result<Vec<(String, T)>, ParamError> {
        self.known.borrow_mut().insert(format!("{name}.VM"));
        let mut out = Vec::new();
        let scoped = format!("{policy}.{name}.");
        let plain = format!("{name}.");
        for k in self.given.keys() {
            let vm = k
                .strip_prefix(&scoped)
                .or_else(|| k.strip_prefix(&plain).filter(|_| !k.contains(&scoped)));
            if let Some(vm) = vm {
                let vm = vm.to_string();
                let key = k.clone();
                let v = parse(self, policy, &key.clone())?;
                self.per_vm_read
                    .borrow_mut()
                    .insert(key.clone(), vm.clone());
                self.used.borrow_mut().insert(key);
                out.push((vm, v));
            }
        }
        Ok(out)
    }

    /// Parses the given value of the full key `key` as a duration.
    pub fn ns_of(&self, key: &str) -> Result<u64, ParamError> {
        let v = self.given.get(key).map(String::as_str).unwrap_or("");
        parse_ns(v).ok_or_else(|| ParamError::Value {
            name: key.to_string(),
            value: v.to_string(),
            want: "a duration (e.g. 750us, 3ms, 0.5s)",
        })
    }

    /// Parses the given value of the full key `key` as an integer.
    pub fn u64_of(&self, key: &str) -> Result<u64, ParamError> {
        let v = self.given.get(key).map(String::as_str).unwrap_or("");
        v.parse().map_err(|_| ParamError::Value {
            name: key.to_string(),
            value: v.to_string(),
            want: "a non-negative integer",
        })
    }

    /// A per-VM parameter for a VM the recording does not have is an error: it would change
    /// nothing, and say so nowhere. `vms`: the recording's VM names.
    pub fn check_vms(&self, vms: &[String]) -> Result<(), ParamError> {
        for (key, vm) in self.per_vm_read.borrow().iter() {
            if !vms.contains(vm) {
                let known: BTreeSet<&str> = vms
                    .iter()
                    .map(String::as_str)
                    .filter(|v| !v.is_empty())
                    .collect();
                let known: Vec<&str> = known.into_iter().collect();
                return Err(ParamError::Invalid(format!(
                    "--param {key}: the recording has no VM {vm:?} (its VMs: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// `name` is a parameter the policy reads only with `setting` (as `groups=true`), which
    /// is not given: if no policy reads it, the error says what it needs, not that it does
    /// not exist.
    pub fn unread_without(&self, name: &str, setting: &str) {
        self.needs
            .borrow_mut()
            .insert(name.to_string(), setting.to_string());
    }

    /// After every selected policy was built: a given name none of them read is an error.
    pub fn check_all_used(&self, policies: &[&str]) -> Result<(), ParamError> {
        let used = self.used.borrow();
        for k in self.given.keys() {
            if !used.contains(k) {
                // `POLICY.name` counts for a selected policy only.
                let (policy, base) = k
                    .split_once('.')
                    .map_or((None, k.as_str()), |(p, n)| (Some(p), n));
                let needs = self.needs.borrow();
                let setting = needs
                    .get(base)
                    .filter(|_| policy.is_none_or(|p| policies.contains(&p)));
                if let Some(setting) = setting {
                    return Err(ParamError::Invalid(format!(
                        "--param {k} needs --param {setting}"
                    )));
                }
                let known: Vec<String> = self.known.borrow().iter().cloned().collect();
                return Err(ParamError::Unknown {
                    name: k.clone(),
                    policies: policies.join(", "),
                    known: known.join(" "),
                });
            }
        }
        Ok(())
    }
}

/// The load balancer's periods, busy and idle (CFS/EEVDF and O(1) alike): a zero period
/// would balance at every instant and never let time advance.
pub fn check_balance_intervals(busy: u64, idle: u64) -> Result<(), ParamError> {
    if busy == 0 || idle == 0 {
        return Err(ParamError::Invalid(
            "--param balance_interval and idle_balance_interval must be above 0".into(),
        ));
    }
    Ok(())
}

/// A duration in the largest unit of [`parse_ns`]'s that holds it whole (`50ms`, `750us`,
/// `1500ns`), so a message names a value as `--param` takes it.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0 => "0".into(),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}us", n / 1_000),
        n => format!("{n}ns"),
    }
}

/// `750us`, `3ms`, `0.5s`, `1000` (ns).
pub fn parse_ns(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e9)
    } else {
        (v, 1.0)
    };
    let x: f64 = num.trim().parse().ok()?;
    let ns = x * mult;
    (0.0..1.8e19).contains(&ns).then_some(ns.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_are_given() {
        for (ns, text) in [
            (50_000_000, "50ms"),
            (10_000_000_000, "10s"),
            (750_000, "750us"),
            (1_500, "1500ns"),
            (0, "0"),
        ] {
            assert_eq!(format_ns(ns), text);
            assert_eq!(parse_ns(text), Some(ns));
        }
    }

    #[test]
    fn durations_and_scoping() {
        assert_eq!(parse_ns("750us"), Some(750_000));
        assert_eq!(parse_ns("0.5s"), Some(500_000_000));
        assert_eq!(parse_ns("12"), Some(12));
        assert_eq!(parse_ns("-1ms"), None);
        let p = Params::parse(&["cfs.latency=12ms", "hz=1000"]).unwrap();
        assert_eq!(p.ns("cfs", "latency", 6).unwrap(), 12_000_000);
        assert_eq!(p.ns("eevdf", "latency", 6).unwrap(), 6);
        assert_eq!(p.u64("cfs", "hz", 250).unwrap(), 1000);
        assert!(p.check_all_used(&["cfs"]).is_ok());
        let p = Params::parse(&["latnecy=1ms"]).unwrap();
        p.ns("cfs", "latency", 6).unwrap();
        let e = p.check_all_used(&["cfs"]).unwrap_err().to_string();
        assert!(e.contains("latnecy") && e.contains("latency"), "{e}");
        assert!(Params::parse(&["nonsense"]).is_err());
    }

    #[test]
    fn a_per_vm_name_must_be_a_vm_of_the_recording() {
        let vms = ["batch".to_string(), "interactive".to_string()];
        let p = Params::parse(&["sedf.slice.batch=5ms", "slice.nosuch=5ms"]).unwrap();
        let read = p.per_vm("sedf", "slice", |p, _, k| p.ns_of(k)).unwrap();
        assert_eq!(read.len(), 2);
        let e = p.check_vms(&vms).unwrap_err().to_string();
        assert!(
            e.contains("slice.nosuch") && e.contains("batch, interactive"),
            "{e}"
        );
        let p = Params::parse(&["sedf.slice.batch=5ms"]).unwrap();
        p.per_vm("sedf", "slice", |p, _, k| p.ns_of(k)).unwrap();
        assert!(p.check_vms(&vms).is_ok());
    }

    #[test]
    fn every_balancer_refuses_a_zero_period() {
        use crate::policy::fair::{FairParams, Flavour};
        use crate::policy::o1::O1Params;
        for name in ["balance_interval", "idle_balance_interval"] {
            let given = [format!("{name}=0")];
            let p = Params::parse(&given).unwrap();
            let errors = [
                FairParams::new(Flavour::Cfs, &p, 2).err(),
                FairParams::new(Flavour::Eevdf, &p, 2).err(),
                O1Params::new(&p).err(),
            ];
            for e in errors {
                let e = e.expect("a zero period is refused").to_string();
                assert!(e.contains("idle_balance_interval must be above 0"), "{e}");
            }
        }
    }
}
