//! What the guest costs and reaches, as ratios against a baseline measured in the same run:
//! native vs emulated work rate (PVM only), and the on-CPU cost of one port-I/O exit
//! (`exits` vs `spin` work rate). Needs /dev/kvm; prints why when it cannot run.
//!
//! `cargo bench -p vmm --bench guest_speed`

use std::time::Duration;

use vmm::{KvmFlavour, Scenario, Workload};

const RUN: Duration = Duration::from_secs(2);
const EXIT_EVERY: u64 = 1000;

/// Work units per second of the vCPU thread's own CPU time (host load does not matter).
fn rate(mut s: Scenario) -> f64 {
    let cpu = vmm::sched::get_affinity(0).expect("affinity")[0];
    s.apply_pin_spec(&format!("all={cpu}")).expect("pin");
    let running = vmm::start(&s).expect("start the VMM");
    std::thread::sleep(RUN);
    running.stop().expect("stop the VMM").vcpus[0].units_per_cpu_s
}

fn main() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        eprintln!("guest_speed: skipped: cannot open /dev/kvm: {e}");
        return;
    }
    let spin = rate(Scenario::uniform(1, 1, Workload::Spin));
    println!("spin        {:>12.0} units/cpu-s (baseline)", spin);

    let mut exits = Scenario::uniform(1, 1, Workload::Exits);
    exits.set_exit_every(EXIT_EVERY);
    let exiting = rate(exits);
    // Each exit replaces nothing: the extra time per EXIT_EVERY units is one exit.
    let per_exit_us = EXIT_EVERY as f64 * (1.0 / exiting - 1.0 / spin) * 1e6;
    println!(
        "exits/{EXIT_EVERY}  {:>12.0} units/cpu-s ({:.3}x spin): {per_exit_us:.1} µs on-CPU per exit",
        exiting,
        exiting / spin
    );

    if KvmFlavour::detect() == KvmFlavour::Pvm {
        let mut emulated = Scenario::uniform(1, 1, Workload::Spin);
        emulated.emulate = true;
        let emu = rate(emulated);
        println!(
            "emulated    {:>12.0} units/cpu-s: native is {:.0}x faster",
            emu,
            spin / emu
        );
    }
}
