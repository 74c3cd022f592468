//! One boot under Bochs, whose Intel CPU models emulate VT-x (VMX with EPT, VPID and
//! unrestricted guest, as Debian builds Bochs 2.7): the guest kernel loads `kvm_intel` and has
//! real VT-x KVM. Bochs cannot load a kernel itself, so kernel and initramfs go on an
//! isolinux CD image. The console goes to the first serial port; the results protocol
//! ([`crate::results`]) goes out through I/O port 0xE9 (Bochs's `port_e9_hack`, written by
//! `/bin/lab-port-e9` from `guest/port-e9.c`), which Bochs copies to its stdout as each OUT
//! executes. Both are captured to files.
//!
//! Facts designed around (measured with Debian 12's bochs 2.7):
//! - Debian builds no headless display: `rfb` (a VNC server on TCP 5900 that does not wait
//!   for a client) is the headless choice, so only one Bochs runs at a time.
//! - Its internal debugger is built in and stops before the first instruction: an `-rc` file
//!   holding `c` continues. At power-off Bochs exits with status 1: a boot is judged by the
//!   suite's `@@lab done`, not by the exit status.
//! - Without a sound card on the host, the ALSA mixer thread aborts at start (fortify):
//!   `sound: driver=dummy`.
//! - The emulated COM2 lost the end of a step's output in 2 of 7 boots (`record`'s JSON cut
//!   mid-line, `@@lab begin` of the next step straight after it, the console showing the step
//!   ended rc=0): a 16550 and the tty layer between the suite and the file. Port 0xE9 has
//!   neither: Bochs takes each byte as its OUT executes, into its stdout (a stdio stream,
//!   complete once Bochs exits; one killed on the timeout may leave its last bytes unwritten,
//!   the console log then says how far the guest got).
//! - With `clock: sync=none` emulated time follows the instruction count (`ips`), so the
//!   guest's own timings do not depend on how loaded the host is; they are not real
//!   latencies either way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::qemu::Boot;
use crate::results::{tail, Results};
use crate::{io_err, run, LabError, Result};

#[derive(Clone, Debug)]
pub struct Bochs {
    /// A Bochs CPU model with VMX (`corei7_haswell_4770`: EPT, VPID, unrestricted guest).
    pub cpu: String,
    pub cpus: u32,
    pub mem_mb: u32,
    /// Emulated instructions per emulated second.
    pub ips: u64,
    /// The whole boot, suite included, is killed after this long (host wall time).
    pub timeout: Duration,
}

impl Default for Bochs {
    fn default() -> Self {
        Bochs {
            cpu: "corei7_haswell_4770".into(),
            cpus: 2,
            mem_mb: 1024,
            ips: 50_000_000,
            timeout: Duration::from_secs(900),
        }
    }
}

impl Bochs {
    /// The lab's base initramfs for an Intel kernel (`kvm-intel` and its dependencies) with
    /// the results port's writer, `/bin/lab-port-e9`, that the generic `/init` picks when
    /// port 0xE9 answers. Add `/lab/suite.sh` and the suite's binaries.
    pub fn initramfs(
        archive: &crate::apt::Archive,
        kernel: &crate::kernel::Kernel,
    ) -> Result<crate::initramfs::Initramfs> {
        let mut fs = crate::base_initramfs(archive, kernel, "kvm-intel")?;
        fs.executable("/bin/lab-port-e9", Path::new(env!("LAB_PORT_E9")))?;
        Ok(fs)
    }

    /// Boots `vmlinuz` with `initramfs` from a CD image made in `workdir`; `append` goes to
    /// the kernel command line after the console settings. Returns once the guest powered
    /// off, or fails on a timeout or a Bochs error, with the console's end in the message.
    pub fn boot(
        &self,
        vmlinuz: &Path,
        initramfs: &Path,
        append: &str,
        workdir: &Path,
    ) -> Result<Boot> {
        std::fs::create_dir_all(workdir).map_err(io_err(workdir))?;
        let iso = self.cd_image(vmlinuz, initramfs, append, workdir)?;
        let console_log = workdir.join("console.log");
        let results_log = workdir.join("results.log");
        for log in [&console_log, &results_log] {
            // Bochs appends to an existing file.
            let _ = std::fs::remove_file(log);
        }
        let rc = workdir.join("bochsrc");
        std::fs::write(&rc, self.bochsrc(&iso, &console_log, workdir)).map_err(io_err(&rc))?;
        let debugger = workdir.join("debugger.rc");
        std::fs::write(&debugger, "c\n").map_err(io_err(&debugger))?;
        // Port 0xE9's bytes go to Bochs's stdout: that is the results log. Bochs's own
        // messages there (banner, debugger) are outside any step and ignored by the parser.
        let results = std::fs::File::create(&results_log).map_err(io_err(&results_log))?;
        let stderr_log = workdir.join("bochs-stderr.log");
        let stderr = std::fs::File::create(&stderr_log).map_err(io_err(&stderr_log))?;

        let started = Instant::now();
        let mut child = Command::new("bochs-bin")
            .arg("-q")
            .arg("-f")
            .arg(&rc)
            .arg("-rc")
            .arg(&debugger)
            .stdin(Stdio::null())
            .stdout(results)
            .stderr(stderr)
            .spawn()
            .map_err(|source| LabError::Spawn {
                program: "bochs-bin".into(),
                source,
            })?;
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let fail = |why: String| LabError::Boot {
            kernel: vmlinuz.display().to_string(),
            why: format!(
                "{why}; console ends:\n{}\nBochs output ends:\n{}",
                tail(&read(&console_log), 30),
                tail(&read(&stderr_log), 10)
            ),
        };
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| fail(format!("cannot wait for Bochs: {e}")))?
            {
                break status;
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no power-off within {:?}", self.timeout)));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let wall = started.elapsed();
        let results = Results::parse(&read(&results_log));
        // Power-off ends Bochs with status 1; anything else without a finished suite is a
        // crash or a refused configuration.
        if !results.done && status.code() != Some(1) {
            return Err(fail(format!("Bochs exited with {status}")));
        }
        Ok(Boot {
            console: read(&console_log),
            results,
            console_log,
            results_log,
            wall,
        })
    }

    fn bochsrc(&self, iso: &Path, console: &Path, workdir: &Path) -> String {
        format!(
            "megs: {mem}
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
cpu: model={cpu}, count={cpus}, ips={ips}, quantum=16, reset_on_triple_fault=0
pci: enabled=1, chipset=i440fx
ata0-master: type=cdrom, path={iso}, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev={console}
port_e9_hack: enabled=1
display_library: rfb, options=\"timeout=0,hideIPS\"
clock: sync=none, time0=local
log: {log}
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
mouse: enabled=0
speaker: enabled=0
sound: driver=dummy
",
            mem = self.mem_mb,
            cpu = self.cpu,
            cpus = self.cpus,
            ips = self.ips,
            iso = iso.display(),
            console = console.display(),
            log = workdir.join("bochs.log").display(),
        )
    }

    /// An El Torito CD with isolinux, the kernel and the initramfs.
    fn cd_image(
        &self,
        vmlinuz: &Path,
        initramfs: &Path,
        append: &str,
        workdir: &Path,
    ) -> Result<PathBuf> {
        let tree = workdir.join("cd");
        let _ = std::fs::remove_dir_all(&tree);
        let boot = tree.join("isolinux");
        std::fs::create_dir_all(&boot).map_err(io_err(&boot))?;
        for (from, to) in [
            (Path::new(ISOLINUX_BIN), boot.join("isolinux.bin")),
            (Path::new(LDLINUX_C32), boot.join("ldlinux.c32")),
            (vmlinuz, tree.join("vmlinuz")),
            (initramfs, tree.join("initrd")),
        ] {
            std::fs::copy(from, &to).map_err(io_err(from))?;
        }
        let cfg = boot.join("isolinux.cfg");
        std::fs::write(
            &cfg,
            format!(
                "default lab\nprompt 0\ntimeout 0\nlabel lab\n  kernel /vmlinuz\n  \
                 append initrd=/initrd console=ttyS0,115200 loglevel=4 panic=-1 {append}\n"
            ),
        )
        .map_err(io_err(&cfg))?;
        let iso = workdir.join("boot.iso");
        run(Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&iso)
            .args([
                "-b",
                "isolinux/isolinux.bin",
                "-c",
                "isolinux/boot.cat",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
                "-boot-info-table",
            ])
            .arg(&tree))?;
        let _ = std::fs::remove_dir_all(&tree);
        Ok(iso)
    }
}

/// From Debian's `isolinux` and `syslinux-common` packages.
const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
