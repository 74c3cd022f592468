//! The task group the kernel's fair scheduler puts a task in: the task's cpu cgroup when that
//! is not the root one, else, with `kernel.sched_autogroup_enabled=1`, its session's autogroup
//! (`autogroup_task_group` in the kernel: an autogroup stands in only for the root cgroup),
//! else the root task group. A replay of a loaded host needs it: the kernel shares a pCPU
//! among the groups first, then among each group's tasks.
//!
//! The cpu cgroup is the one the kernel charges: on v1 the task's cgroup in the hierarchy that
//! has the cpu controller; on v2 the nearest cgroup, from the task's own up, where the cpu
//! controller is on (it has `cpu.weight`: its parent's `cgroup.subtree_control` names `cpu`),
//! since a cgroup without it is scheduled as part of that ancestor. Its weight is that
//! cgroup's own. Cgroups nest (v1's cpu hierarchy too), and the kernel weighs each level
//! against its siblings, so a group's share of the host is its weight's share among its
//! siblings times its parent's share, and so on up: which siblings are busy decides it, which
//! a reading of one task cannot know. The record keeps the whole path, so a replay can tell
//! a nested group and say what it leaves out (`simulate`'s `task groups` note).

use std::fs;
use std::path::{Path, PathBuf};

use crate::task_files::is_gone;

/// `tg->shares` of a group nobody changed (nice 0, `cpu.shares` 1024, `cpu.weight` 100).
const DEFAULT_SHARES: u32 = 1024;

/// Where the cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// v1 mount points of the hierarchy with the cpu controller, under [`CGROUP_ROOT`].
const V1_CPU_MOUNTS: [&str; 3] = ["cpu", "cpu,cpuacct", "cpuacct,cpu"];

/// Where a task's fair-class load is grouped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskGroupFacts {
    /// The root task group (kernel threads, init; every task without autogroups or cgroups):
    /// its tasks are scheduled each on its own.
    Root,
    /// A session's autogroup: `/autogroup-<id>` and its nice (`/proc/<pid>/autogroup`).
    Autogroup { name: String, nice: i32 },
    /// A cpu cgroup other than the root: its path from the root of its hierarchy and its
    /// shares on the nice-0 = 1024 scale (v1 `cpu.shares`, v2 `cpu.weight` x 1024 / 100
    /// rounded as the kernel rounds it; 1024 where unreadable). Its ancestors' weights are
    /// not composed in (see the module's documentation).
    Cgroup { path: String, shares: u32 },
}

/// The task group of task `tid` (any thread id: `/proc/<tid>` reaches every thread), `None`
/// once the task is gone.
pub fn task_group(tid: u32) -> Option<TaskGroupFacts> {
    let dir = Path::new(crate::process::PROC_ROOT).join(tid.to_string());
    let cgroups = read_unless_gone(&dir.join("cgroup"))?.unwrap_or_default();
    if let Some(group) = cpu_cgroup(&cgroups, Path::new(CGROUP_ROOT)) {
        return Some(group);
    }
    let autogroups = fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|s| s.trim() == "1");
    if !autogroups {
        return Some(TaskGroupFacts::Root);
    }
    let text = read_unless_gone(&dir.join("autogroup"))?.unwrap_or_default();
    Some(parse_autogroup(&text))
}

/// A file's text; `None` when the task is gone, `Some(None)` when it exists but cannot be
/// read (no such file on this kernel).
fn read_unless_gone(path: &Path) -> Option<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Some(Some(text)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => None,
        Err(e) if is_gone(&e) && !path.parent().is_some_and(Path::exists) => None,
        Err(_) => Some(None),
    }
}

/// `/proc/<pid>/autogroup`: `/autogroup-<id> nice <n>`, empty in the root task group.
pub fn parse_autogroup(text: &str) -> TaskGroupFacts {
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(name), Some("nice"), Some(nice)) => TaskGroupFacts::Autogroup {
            name: name.to_string(),
            nice: nice.parse().unwrap_or(0),
        },
        (Some(name), _, _) => TaskGroupFacts::Autogroup {
            name: name.to_string(),
            nice: 0,
        },
        _ => TaskGroupFacts::Root,
    }
}

/// The cpu cgroup the kernel charges the task's load to, from `/proc/<pid>/cgroup` and the
/// cgroup filesystems mounted at `root`, unless it is the root one (where autogroups apply).
fn cpu_cgroup(text: &str, root: &Path) -> Option<TaskGroupFacts> {
    let (path, v1) = cpu_cgroup_path(text)?;
    let (path, shares) = if v1 {
        let shares = V1_CPU_MOUNTS
            .iter()
            .find_map(|m| read_u64(&cgroup_dir(&root.join(m), path).join("cpu.shares")));
        (path, shares)
    } else {
        // The nearest cgroup with the controller on; none short of the root: the root group.
        let mut at = path;
        loop {
            if at.trim_end_matches('/').is_empty() {
                return None;
            }
            if let Some(weight) = read_u64(&cgroup_dir(root, at).join("cpu.weight")) {
                // `sched_weight_from_cgroup`: DIV_ROUND_CLOSEST(weight * 1024, 100).
                break (at, Some((weight * 1024 + 50) / 100));
            }
            at = at.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
    };
    if path.trim_end_matches('/').is_empty() {
        return None;
    }
    Some(TaskGroupFacts::Cgroup {
        path: path.to_string(),
        shares: shares.map_or(DEFAULT_SHARES, |s| s.clamp(2, 1 << 18) as u32),
    })
}

/// The directory of cgroup `path` (as `/proc/<pid>/cgroup` names it) in the hierarchy at
/// `mount`.
fn cgroup_dir(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// The cpu controller's line of `/proc/<pid>/cgroup`: a v1 hierarchy that names `cpu`, else
/// the v2 one (`0::`); the path and whether it is v1.
pub fn cpu_cgroup_path(text: &str) -> Option<(&str, bool)> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "cpu") {
            return Some((path, true));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some((path, false));
        }
    }
    v2
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autogroup_lines_parse_and_an_empty_one_is_the_root_group() {
        assert_eq!(
            parse_autogroup("/autogroup-1166 nice 5\n"),
            TaskGroupFacts::Autogroup {
                name: "/autogroup-1166".into(),
                nice: 5
            }
        );
        assert_eq!(parse_autogroup(""), TaskGroupFacts::Root);
    }

    #[test]
    fn the_cpu_line_is_v1s_cpu_hierarchy_else_v2s() {
        let v1 = "9:name=systemd:/\n4:memory:/x\n2:cpu,cpuacct:/user.slice\n0::/\n";
        assert_eq!(cpu_cgroup_path(v1), Some(("/user.slice", true)));
        let v2 = "0::/user.slice/session-3.scope\n";
        assert_eq!(
            cpu_cgroup_path(v2),
            Some(("/user.slice/session-3.scope", false))
        );
        assert_eq!(cpu_cgroup_path("1:cpuset:/\n"), None);
        let nowhere = Path::new("/nonexistent");
        assert_eq!(
            cpu_cgroup(v1.replace("/user.slice", "/").as_str(), nowhere),
            None
        );
    }

    /// A cgroup tree laid out as `/sys/fs/cgroup` is, in a temporary directory.
    struct CgroupTree(tempfile::TempDir);

    impl CgroupTree {
        fn new() -> Self {
            CgroupTree(tempfile::tempdir().unwrap())
        }
        /// Creates cgroup `path`, with `file` holding `value` when given.
        fn cgroup(&self, path: &str, file: Option<(&str, u64)>) -> &Self {
            let dir = cgroup_dir(self.0.path(), path);
            fs::create_dir_all(&dir).unwrap();
            if let Some((name, value)) = file {
                fs::write(dir.join(name), format!("{value}\n")).unwrap();
            }
            self
        }
        fn group_of(&self, proc_cgroup: &str) -> Option<TaskGroupFacts> {
            cpu_cgroup(proc_cgroup, self.0.path())
        }
    }

    fn cgroup(path: &str, shares: u32) -> Option<TaskGroupFacts> {
        Some(TaskGroupFacts::Cgroup {
            path: path.into(),
            shares,
        })
    }

    /// v2: the task's own cgroup when the cpu controller is on there; else the nearest
    /// ancestor where it is (the kernel schedules a cgroup without it as part of that
    /// ancestor), with that ancestor's weight; the root group when no cgroup short of the root
    /// has it. The weight as the kernel scales it, rounded to the closest.
    #[test]
    fn v2_groups_by_the_nearest_cgroup_with_the_cpu_controller() {
        let tree = CgroupTree::new();
        tree.cgroup("/user.slice", Some(("cpu.weight", 100)))
            .cgroup("/user.slice/user-0.slice", Some(("cpu.weight", 33)))
            .cgroup("/user.slice/user-0.slice/session-3.scope", None)
            .cgroup("/system.slice/cron.service", None)
            .cgroup("/system.slice/vm.service", Some(("cpu.weight", 400)));
        assert_eq!(
            tree.group_of("0::/user.slice/user-0.slice/session-3.scope\n"),
            cgroup("/user.slice/user-0.slice", 338),
            "the controller is off in the scope: its ancestor's group"
        );
        assert_eq!(
            tree.group_of("0::/system.slice/vm.service\n"),
            cgroup("/system.slice/vm.service", 4096)
        );
        assert_eq!(tree.group_of("0::/system.slice/cron.service\n"), None);
        assert_eq!(tree.group_of("0::/\n"), None);
    }

    /// v1: the cgroup of the hierarchy with the cpu controller, by whichever name it is
    /// mounted under, its `cpu.shares`; nested cgroups keep their whole path.
    #[test]
    fn v1_groups_by_the_cpu_hierarchys_cgroup_and_its_shares() {
        let tree = CgroupTree::new();
        tree.cgroup("/cpu,cpuacct/machine/vm1", Some(("cpu.shares", 2048)));
        assert_eq!(
            tree.group_of("5:cpu,cpuacct:/machine/vm1\n0::/\n"),
            cgroup("/machine/vm1", 2048)
        );
        // Unreadable shares: the default; the root cgroup: no group of its own.
        assert_eq!(
            tree.group_of("5:cpu,cpuacct:/machine/gone\n"),
            cgroup("/machine/gone", DEFAULT_SHARES)
        );
        assert_eq!(tree.group_of("5:cpu,cpuacct:/\n"), None);
    }

    #[test]
    fn this_task_has_a_group_and_a_gone_one_has_none() {
        assert!(task_group(crate::gettid()).is_some());
        assert_eq!(task_group(u32::MAX), None);
    }
}
