//! The task group the kernel's fair scheduler puts a task in: the task's cpu cgroup when that
//! is not the root one, else, with `kernel.sched_autogroup_enabled=1`, its session's autogroup
//! (`autogroup_task_group` in the kernel: an autogroup stands in only for the root cgroup),
//! else the root task group. A replay of a loaded host needs it: the kernel shares a pCPU
//! among the groups first, then among each group's tasks.

use std::fs;
use std::path::Path;

use crate::task_files::is_gone;

/// `tg->shares` of a group nobody changed (nice 0, `cpu.shares` 1024, `cpu.weight` 100).
const DEFAULT_SHARES: u32 = 1024;

/// Where a task's fair-class load is grouped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskGroupFacts {
    /// The root task group (kernel threads, init; every task without autogroups or cgroups):
    /// its tasks are scheduled each on its own.
    Root,
    /// A session's autogroup: `/autogroup-<id>` and its nice (`/proc/<pid>/autogroup`).
    Autogroup { name: String, nice: i32 },
    /// A cpu cgroup other than the root: its path and its shares on the nice-0 = 1024 scale
    /// (v1 `cpu.shares`, v2 `cpu.weight` x 1024 / 100; 1024 where unreadable).
    Cgroup { path: String, shares: u32 },
}

/// The task group of task `tid` (any thread id: `/proc/<tid>` reaches every thread), `None`
/// once the task is gone.
pub fn task_group(tid: u32) -> Option<TaskGroupFacts> {
    let dir = Path::new(crate::process::PROC_ROOT).join(tid.to_string());
    let cgroups = read_unless_gone(&dir.join("cgroup"))?.unwrap_or_default();
    if let Some(group) = cpu_cgroup(&cgroups) {
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

/// The task's cpu cgroup from `/proc/<pid>/cgroup`, unless it is the root one (or, on
/// cgroup v2, one where the cpu controller is off, which groups nothing).
fn cpu_cgroup(text: &str) -> Option<TaskGroupFacts> {
    let (path, v1) = cpu_cgroup_path(text)?;
    if path == "/" {
        return None;
    }
    let shares = if v1 {
        ["cpu", "cpu,cpuacct", "cpuacct,cpu"]
            .iter()
            .find_map(|m| read_u64(&format!("/sys/fs/cgroup/{m}{path}/cpu.shares")))
    } else {
        // No `cpu.weight`: the controller is off there, and the kernel groups by autogroup.
        Some(read_u64(&format!("/sys/fs/cgroup{path}/cpu.weight"))? * 1024 / 100)
    };
    Some(TaskGroupFacts::Cgroup {
        path: path.to_string(),
        shares: shares.map_or(DEFAULT_SHARES, |s| s.clamp(2, 1 << 18) as u32),
    })
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

fn read_u64(path: &str) -> Option<u64> {
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
        assert_eq!(cpu_cgroup(v1.replace("/user.slice", "/").as_str()), None);
    }

    #[test]
    fn this_task_has_a_group_and_a_gone_one_has_none() {
        assert!(task_group(crate::gettid()).is_some());
        assert_eq!(task_group(u32::MAX), None);
    }
}
