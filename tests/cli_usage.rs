//! Usage mistakes caught by the argument parser are one line that says what to do: a missing
//! argument is named, and a missing command lists the commands of its level.

mod common;

use common::kvmscope;

fn one_line_failure(args: &[&str]) -> String {
    let out = kvmscope().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "kvmscope {args:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn a_missing_argument_is_named() {
    let err = one_line_failure(&["replay"]);
    assert!(err.contains("<FILE>"), "{err}");
    let err = one_line_failure(&["export", "t.trace"]);
    assert!(err.contains("--format") && err.contains("-o"), "{err}");
}

#[test]
fn no_command_lists_the_commands() {
    let err = one_line_failure(&[]);
    for command in ["check", "demo", "record", "replay", "simulate", "exporter"] {
        assert!(err.contains(command), "no {command} in {err}");
    }
}

#[test]
fn a_command_without_its_own_command_lists_those() {
    let err = one_line_failure(&["qemu"]);
    assert!(err.starts_with("kvmscope qemu: no command given"), "{err}");
    assert!(err.contains("list"), "{err}");
    assert!(!err.contains("simulate"), "the top level's commands: {err}");
}

/// A negative value reaches the option's own check, which says what it takes, not clap's
/// "unexpected argument '-1' found"; a missing value lists no empty set of values.
#[test]
fn a_negative_or_missing_value_says_what_the_option_takes() {
    let err = one_line_failure(&["record", "--demo", "--duration", "-1", "-o", "x.trace"]);
    assert!(
        err.contains("--duration") && err.contains("not a duration"),
        "{err}"
    );
    let err = one_line_failure(&["vmm", "--vms", "-2"]);
    assert!(err.contains("--vms") && err.contains("-2"), "{err}");
    let err = one_line_failure(&["simulate", "x.trace", "--record"]);
    assert!(err.contains("--record <OUT>"), "{err}");
    assert!(!err.contains("expected one of"), "{err}");
}
