//! What the VMM does with each exit `KVM_RUN` returns to user space: a plain function over
//! kvm-ioctls' `VcpuExit`, so tests can feed it fabricated exits without KVM.

use std::time::Duration;

use kvm_ioctls::VcpuExit;
use serde::Serialize;

use crate::guest::{port, HELLO_MAGIC};
use crate::scenario::MAX_SLEEP_US;

/// Exits that reached the VMM, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitCounts {
    /// Port I/O (`KVM_EXIT_IO`), all ports.
    pub pio: u64,
    /// MMIO (`KVM_EXIT_MMIO`); our guest does none.
    pub mmio: u64,
    /// `KVM_EXIT_HLT` (VT-x/AMD-V without an in-kernel irqchip).
    pub hlt: u64,
    /// `KVM_RUN` interrupted by a signal (`EINTR` / `KVM_EXIT_INTR`): the VMM's kicks.
    pub intr: u64,
    /// Anything else.
    pub other: u64,
    /// Of `pio`: tick exits of the `exits` workload.
    pub ticks: u64,
    /// Of `pio`: sleep requests of the `sleepy` workload.
    pub sleeps: u64,
    /// Port writes whose value was not what the guest program sends (should stay 0).
    pub bad_values: u64,
}

impl ExitCounts {
    /// All exits to user space.
    pub fn total(&self) -> u64 {
        self.pio + self.mmio + self.hlt + self.intr + self.other
    }
}

/// Why a guest cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExitFault {
    #[error("KVM_EXIT_SHUTDOWN (the guest triple-faulted: an exception it could not handle)")]
    Shutdown,
    #[error(
        "KVM_EXIT_INTERNAL_ERROR (suberror {suberror}: KVM could not emulate or deliver an event)"
    )]
    InternalError { suberror: u32 },
    #[error("KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason:#x} on cpu {cpu}: invalid guest state)")]
    FailEntry { reason: u64, cpu: u32 },
    #[error(
        "bad hello on port {:#x}: got {got:#x}, expected {expected:#x}",
        port::HELLO
    )]
    BadHello { got: u32, expected: u32 },
    #[error("{0}")]
    Unexpected(String),
}

/// What the vCPU loop does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Re-enter the guest.
    Continue,
    /// Block this thread (a `sleepy` guest's request), then re-enter.
    Sleep(Duration),
    /// Stop this vCPU and report the fault.
    Fault(ExitFault),
}

/// The VMM side of one vCPU's port protocol and its exit counters.
#[derive(Clone, Debug, Default)]
pub struct ExitHandler {
    vcpu_index: u32,
    exit_every: u64,
    next_tick: u32,
    /// Set once the guest said hello.
    pub started: bool,
    pub counts: ExitCounts,
}

impl ExitHandler {
    pub fn new(vcpu_index: u32, exit_every: u64) -> ExitHandler {
        ExitHandler {
            vcpu_index,
            exit_every,
            next_tick: exit_every as u32,
            started: false,
            counts: ExitCounts::default(),
        }
    }

    /// Handles one exit. `IoIn`/`MmioRead` data is zero-filled (our guest does neither).
    pub fn handle(&mut self, exit: VcpuExit<'_>) -> ExitAction {
        match exit {
            VcpuExit::IoOut(p, data) => {
                self.counts.pio += 1;
                self.port_write(p, data)
            }
            VcpuExit::IoIn(_, data) => {
                self.counts.pio += 1;
                data.fill(0);
                ExitAction::Continue
            }
            VcpuExit::MmioRead(_, data) => {
                self.counts.mmio += 1;
                data.fill(0);
                ExitAction::Continue
            }
            VcpuExit::MmioWrite(..) => {
                self.counts.mmio += 1;
                ExitAction::Continue
            }
            VcpuExit::Hlt => {
                // Our guest never halts; a HLT here means its code went astray.
                self.counts.hlt += 1;
                ExitAction::Fault(ExitFault::Unexpected(
                    "KVM_EXIT_HLT (the guest halted, which its program never does)".into(),
                ))
            }
            VcpuExit::Intr => {
                self.counts.intr += 1;
                ExitAction::Continue
            }
            VcpuExit::Shutdown => ExitAction::Fault(ExitFault::Shutdown),
            // The suberror is read from kvm_run by the caller, which owns it.
            VcpuExit::InternalError => ExitAction::Fault(ExitFault::InternalError { suberror: 0 }),
            VcpuExit::FailEntry(reason, cpu) => {
                ExitAction::Fault(ExitFault::FailEntry { reason, cpu })
            }
            VcpuExit::SystemEvent(kind, _) => ExitAction::Fault(ExitFault::Unexpected(format!(
                "KVM_EXIT_SYSTEM_EVENT type {kind} (the guest asked for a reset or power-off)"
            ))),
            other => {
                self.counts.other += 1;
                ExitAction::Fault(ExitFault::Unexpected(format!("unexpected exit {other:?}")))
            }
        }
    }

    fn port_write(&mut self, p: u16, data: &[u8]) -> ExitAction {
        let mut word = [0u8; 4];
        let n = data.len().min(4);
        word[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(word);
        match p {
            port::HELLO => {
                let expected = HELLO_MAGIC.wrapping_add(self.vcpu_index);
                if value != expected || data.len() != 4 {
                    return ExitAction::Fault(ExitFault::BadHello {
                        got: value,
                        expected,
                    });
                }
                self.started = true;
                ExitAction::Continue
            }
            port::TICK => {
                self.counts.ticks += 1;
                // The guest sends its unit count every `exit_every` units: a different value
                // means lost or corrupted exits.
                if value != self.next_tick {
                    self.counts.bad_values += 1;
                }
                self.next_tick = value.wrapping_add(self.exit_every as u32);
                ExitAction::Continue
            }
            port::SLEEP => {
                self.counts.sleeps += 1;
                let us = u64::from(value);
                if us > MAX_SLEEP_US {
                    self.counts.bad_values += 1;
                }
                ExitAction::Sleep(Duration::from_micros(us.min(MAX_SLEEP_US)))
            }
            _ => {
                self.counts.bad_values += 1;
                ExitAction::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(h: &mut ExitHandler, p: u16, v: u32) -> ExitAction {
        h.handle(VcpuExit::IoOut(p, &v.to_le_bytes()))
    }

    #[test]
    fn hello_must_carry_the_vcpu_index() {
        let mut h = ExitHandler::new(3, 10);
        assert_eq!(
            out(&mut h, port::HELLO, HELLO_MAGIC + 3),
            ExitAction::Continue
        );
        assert!(h.started);
        let mut h = ExitHandler::new(3, 10);
        assert_eq!(
            out(&mut h, port::HELLO, HELLO_MAGIC + 2),
            ExitAction::Fault(ExitFault::BadHello {
                got: HELLO_MAGIC + 2,
                expected: HELLO_MAGIC + 3
            })
        );
    }

    #[test]
    fn ticks_are_checked_against_the_unit_count() {
        let mut h = ExitHandler::new(0, 1000);
        for k in 1..=5 {
            assert_eq!(out(&mut h, port::TICK, 1000 * k), ExitAction::Continue);
        }
        assert_eq!(h.counts.ticks, 5);
        assert_eq!(h.counts.bad_values, 0);
        // A skipped tick is noticed once, then the sequence resynchronises.
        out(&mut h, port::TICK, 7000);
        out(&mut h, port::TICK, 8000);
        assert_eq!(h.counts.bad_values, 1);
        assert_eq!(h.counts.pio, 7);
        // The counter wraps at 32 bits like the guest's `mov eax, r13d`.
        let mut h = ExitHandler::new(0, 1 << 31);
        out(&mut h, port::TICK, 1 << 31);
        out(&mut h, port::TICK, 0);
        assert_eq!(h.counts.bad_values, 0);
    }

    #[test]
    fn sleep_requests_block_for_the_asked_time() {
        let mut h = ExitHandler::new(0, 1);
        assert_eq!(
            out(&mut h, port::SLEEP, 2000),
            ExitAction::Sleep(Duration::from_micros(2000))
        );
        assert_eq!(
            out(&mut h, port::SLEEP, u32::MAX),
            ExitAction::Sleep(Duration::from_micros(MAX_SLEEP_US))
        );
        assert_eq!(h.counts.sleeps, 2);
        assert_eq!(h.counts.bad_values, 1);
    }

    #[test]
    fn faults_and_other_exits() {
        let mut h = ExitHandler::new(0, 1);
        assert_eq!(
            h.handle(VcpuExit::Shutdown),
            ExitAction::Fault(ExitFault::Shutdown)
        );
        assert_eq!(
            h.handle(VcpuExit::FailEntry(0x21, 1)),
            ExitAction::Fault(ExitFault::FailEntry {
                reason: 0x21,
                cpu: 1
            })
        );
        assert!(matches!(
            h.handle(VcpuExit::InternalError),
            ExitAction::Fault(ExitFault::InternalError { .. })
        ));
        assert!(matches!(h.handle(VcpuExit::Hlt), ExitAction::Fault(_)));
        assert_eq!(h.handle(VcpuExit::Intr), ExitAction::Continue);
        let mut buf = [0xffu8; 4];
        assert_eq!(
            h.handle(VcpuExit::MmioRead(0xd000_0000, &mut buf)),
            ExitAction::Continue
        );
        assert_eq!(buf, [0; 4]);
        assert_eq!(
            h.handle(VcpuExit::MmioWrite(0xd000_0000, &[1])),
            ExitAction::Continue
        );
        assert!(matches!(h.handle(VcpuExit::Unknown), ExitAction::Fault(_)));
        assert_eq!(h.counts.mmio, 2);
        assert_eq!(h.counts.hlt, 1);
        assert_eq!(h.counts.intr, 1);
        assert_eq!(h.counts.other, 1);
        assert_eq!(h.counts.total(), 5);
        assert!(ExitFault::Shutdown.to_string().contains("triple-faulted"));
    }

    #[test]
    fn unknown_ports_are_counted_not_fatal() {
        let mut h = ExitHandler::new(0, 1);
        assert_eq!(out(&mut h, 0x3f8, u32::from(b'x')), ExitAction::Continue);
        let mut buf = [0xffu8; 1];
        assert_eq!(
            h.handle(VcpuExit::IoIn(0x60, &mut buf)),
            ExitAction::Continue
        );
        assert_eq!(buf, [0]);
        assert_eq!(h.counts.bad_values, 1);
        assert_eq!(h.counts.pio, 2);
    }
}
