//! The scenario grammar and `Scenario::plan`, the one validator of VM knobs.

use super::*;

#[test]
fn plan_refuses_a_zero_sleep_from_a_file_as_from_the_command_line() {
    let file = Scenario::from_toml_str(
        "[[vm]]\nname = \"s\"\nvcpus = 1\nworkload = \"sleepy\"\nsleep_us = 0\n",
    )
    .unwrap_err();
    let mut flags = Scenario::uniform(1, 1, Workload::Sleepy);
    flags.set_sleepy(None, Some(0));
    let flags = flags.plan().unwrap_err().to_string();
    for err in [file, flags] {
        assert!(err.contains("sleep_us = 0 is out of range (1 to"), "{err}");
    }
}

#[test]
fn cpu_lists_parse() {
    assert_eq!("1".parse::<CpuList>().unwrap().cpus(), &[1]);
    assert_eq!("0-3".parse::<CpuList>().unwrap().cpus(), &[0, 1, 2, 3]);
    assert_eq!("2+0".parse::<CpuList>().unwrap().cpus(), &[0, 2]);
    assert_eq!("0,2-3".parse::<CpuList>().unwrap().cpus(), &[0, 2, 3]);
    for bad in ["", "x", "3-1", "1-", "-1", "0+"] {
        let e = bad.parse::<CpuList>().unwrap_err().to_string();
        assert!(e.contains(&format!("`{bad}`")), "{e}");
    }
}

#[test]
fn knob_specs_parse() {
    let k = KnobSpec::<CpuList>::parse("--pin", "all=0").unwrap();
    assert_eq!(k.target, KnobTarget::All);
    let k = KnobSpec::<CpuList>::parse("--pin", "vm0:vcpu1=1").unwrap();
    assert_eq!(k.target, KnobTarget::Vcpu("vm0".into(), 1));
    assert_eq!(k.value.cpus(), &[1]);
    let k = KnobSpec::<Nice>::parse("--nice", "batch=10").unwrap();
    assert_eq!(k.target, KnobTarget::Vm("batch".into()));
    assert_eq!(k.value, Nice(10));

    for (spec, needle) in [
        ("vm1", "missing `=`"),
        ("vm1=99", "-20 to 19"),
        ("vm1=x", "-20 to 19"),
        ("vm0:cpu1=1", "`cpu1` is not `vcpuM`"),
        ("=1", "empty target"),
    ] {
        let e = KnobSpec::<Nice>::parse("--nice", spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{spec}: {e}");
        assert!(e.contains(&format!("`{spec}`")), "{spec}: {e}");
    }
}

#[test]
fn knobs_apply_to_the_named_vcpus() {
    let mut s = Scenario::uniform(2, 2, Workload::Spin);
    s.apply_pin_spec("all=0").unwrap();
    s.apply_pin_spec("vm1:vcpu1=1").unwrap();
    s.apply_nice_spec("vm1=10").unwrap();
    s.apply_nice_spec("vm0:vcpu0=-5").unwrap();
    let p = s.plan().unwrap();
    let pins: Vec<_> = p
        .iter()
        .map(|v| v.pin.as_ref().unwrap().cpus()[0])
        .collect();
    assert_eq!(pins, [0, 0, 0, 1]);
    let nices: Vec<_> = p.iter().map(|v| v.nice).collect();
    assert_eq!(nices, [Some(-5), None, Some(10), Some(10)]);

    let e = s.apply_nice_spec("vm2=1").unwrap_err().to_string();
    assert!(e.contains("no VM `vm2`"), "{e}");
    let e = s.apply_pin_spec("vm0:vcpu2=1").unwrap_err().to_string();
    assert!(e.contains("no vcpu2"), "{e}");
}

#[test]
fn mixed_rotates_over_vcpus() {
    let s = Scenario::uniform(2, 2, Workload::Mixed);
    let w: Vec<_> = s.plan().unwrap().iter().map(|p| p.workload).collect();
    assert_eq!(
        w,
        [
            Workload::Spin,
            Workload::Exits,
            Workload::Sleepy,
            Workload::Spin
        ]
    );
}

#[test]
fn demo_is_overcommitted_with_all_knobs() {
    let p = Scenario::default_demo().plan().unwrap();
    assert!(p.len() >= 5);
    assert!(p.iter().any(|v| v.nice == Some(10)));
    assert!(p.iter().any(|v| v.workload == Workload::Sleepy));
    assert!(p.iter().any(|v| v.workload == Workload::Exits));
    assert!(Scenario::default_demo().migrate_every_ms.is_some());
}

#[test]
fn toml_scenario_parses() {
    let s = Scenario::from_toml_str(
        r#"
        migrate_every_ms = 100
        [[vm]]
        name = "batch"
        vcpus = 2
        workload = "spin"
        pin = "0-1"
        [[vm]]
        name = "io"
        vcpus = 1
        workload = "exits"
        exit_every = 5000
        nice = 5
        pin = [1]
        [[vm.vcpu]]
        index = 0
        nice = -3
        "#,
    )
    .unwrap();
    assert_eq!(s.migrate_every_ms, Some(100));
    assert_eq!(s.gap_threshold_us, DEFAULT_GAP_THRESHOLD_US);
    let p = s.plan().unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(p[2].exit_every, 5000);
    assert_eq!(p[2].nice, Some(-3));
    assert_eq!(p[0].pin.as_ref().unwrap().cpus(), &[0, 1]);
    // Round trip through the serialised form.
    let again = Scenario::from_toml_str(&toml::to_string(&s).unwrap()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn malformed_toml_names_the_problem() {
    for (text, needle) in [
        ("[[vm]]\nname = \"a\"\nvcpus = 1\nworkload = \"jog\"\n", "jog"),
        ("[[vm]]\nname = \"a\"\nvcpus = 0\nworkload = \"spin\"\n", "vcpus = 0"),
        ("[[vm]]\nname = \"a\"\nvcpus = 1\nworkload = \"spin\"\ncolour = 1\n", "colour"),
        ("[[vm]]\nname = \"a\"\nvcpus = 1\nworkload = \"spin\"\nnice = 40\n", "nice 40"),
        ("[[vm]]\nname = \"a\"\nvcpus = 1\nworkload = \"spin\"\npin = \"z\"\n", "`z`"),
        ("vm = 3\n", "line 1"),
        ("", "missing field `vm`"),
        (
            "[[vm]]\nname = \"a\"\nvcpus = 1\nworkload = \"spin\"\n[[vm]]\nname = \"a\"\nvcpus = 1\nworkload = \"spin\"\n",
            "two VMs are named `a`",
        ),
    ] {
        let e = Scenario::from_toml_str(text).unwrap_err();
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
