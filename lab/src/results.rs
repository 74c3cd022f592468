//! The results protocol: how a guest's steps come back to the host. The guest's `/init`
//! writes to its results port (the second serial port, `ttyS1`, when the emulator gives one;
//! else the console) for each step:
//!
//! ```text
//! @@lab begin NAME
//! ...the step's stdout...
//! @@lab stderr NAME
//! ...its stderr...
//! @@lab end NAME rc=RC ms=MS
//! ```
//!
//! and `@@lab done` once the suite is over. A step whose output is large says
//! `@@lab begin NAME gzip+base64`: its stdout is then gzip'd and base64'd (serial ports move
//! about 120 KB/s under TCG; kvmscope's JSON lines shrink about tenfold). Lines outside a step (kernel messages on a shared
//! console) are ignored; carriage returns added by the tty are removed.

use crate::{LabError, Result};

const MARK: &str = "@@lab ";

/// One step as the guest ran it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub stdout: String,
    pub stderr: String,
    /// `None` if the step never ended (the guest hung or died in it).
    pub rc: Option<i32>,
    /// Guest wall time of the step.
    pub ms: u64,
    /// stdout came gzip'd and base64'd (decoded at the step's end).
    pub gzip: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub steps: Vec<Step>,
    /// The suite ran to its end.
    pub done: bool,
}

impl Results {
    pub fn parse(text: &str) -> Results {
        let mut results = Results::default();
        // Where the current step's lines go: none, stdout, stderr.
        let mut sink = 0u8;
        for raw in text.split('\n') {
            let line = raw.trim_end_matches('\r');
            // The marker may follow a partial kernel line on a shared console.
            match line.find(MARK).map(|i| &line[i + MARK.len()..]) {
                Some(rest) => {
                    let mut words = rest.split_whitespace();
                    match (words.next(), words.next()) {
                        (Some("begin"), Some(name)) => {
                            results.steps.push(Step {
                                name: name.to_string(),
                                gzip: words.next() == Some("gzip+base64"),
                                ..Step::default()
                            });
                            sink = 1;
                        }
                        (Some("stderr"), Some(_)) => sink = 2,
                        (Some("end"), Some(_)) => {
                            if let Some(step) = results.steps.last_mut() {
                                if step.gzip {
                                    decode(step);
                                }
                                for w in words {
                                    if let Some(v) = w.strip_prefix("rc=") {
                                        step.rc = v.parse().ok();
                                    } else if let Some(v) = w.strip_prefix("ms=") {
                                        step.ms = v.parse().unwrap_or(0);
                                    }
                                }
                            }
                            sink = 0;
                        }
                        (Some("done"), _) => results.done = true,
                        _ => {}
                    }
                }
                None => {
                    if let Some(step) = results.steps.last_mut() {
                        let out = match sink {
                            1 => &mut step.stdout,
                            2 => &mut step.stderr,
                            _ => continue,
                        };
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
        results
    }

    /// The step called `name` (the last one, if it ran more than once).
    pub fn step(&self, name: &str) -> Result<&Step> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let ran: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
                LabError::Results(format!(
                    "no step {name} in the guest's results (steps: {}; suite {})",
                    if ran.is_empty() {
                        "none".to_string()
                    } else {
                        ran.join(", ")
                    },
                    if self.done {
                        "finished"
                    } else {
                        "did not finish"
                    }
                ))
            })
    }

    /// The step's stdout if it ended with status 0; otherwise an error with its stderr.
    pub fn ok(&self, name: &str) -> Result<&str> {
        let step = self.step(name)?;
        match step.rc {
            Some(0) => Ok(&step.stdout),
            rc => Err(LabError::Results(format!(
                "step {name} {}: {}",
                match rc {
                    Some(rc) => format!("exited with {rc}"),
                    None => "never ended".into(),
                },
                tail(&step.stderr, 20)
            ))),
        }
    }

    /// The bytes of a step that sent a file base64'd (the suites' `base64 FILE > F.b64;
    /// lab_emit NAME F.b64`), if it ended with status 0.
    pub fn base64(&self, name: &str) -> Result<Vec<u8>> {
        unbase64(self.ok(name)?)
            .map_err(|e| LabError::Results(format!("step {name}: not base64: {e}")))
    }
}

/// Base64 text as the guest's `base64` wraps it (whitespace between lines) to its bytes.
fn unbase64(text: &str) -> std::result::Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    let b64: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64.as_bytes())
}

/// Replaces a gzip+base64 stdout by its text; a broken one becomes a line in stderr.
fn decode(step: &mut Step) {
    use std::io::Read;
    let text = unbase64(&step.stdout)
        .map_err(|e| e.to_string())
        .and_then(|gz| {
            let mut text = String::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_string(&mut text)
                .map_err(|e| e.to_string())
                .map(|_| text)
        });
    match text {
        Ok(text) => step.stdout = text,
        Err(e) => {
            step.stdout.clear();
            step.stderr
                .push_str(&format!("lab: undecodable gzip+base64 output: {e}\n"));
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_survive_kernel_noise_and_crlf() {
        let text = "[    1.2] random: crng init\r\n@@lab begin check\r\n{\"a\":1}\r\n\
                    @@lab stderr check\r\nwarning: x\r\n[    2.0] kvm: ok\r\n\
                    @@lab end check rc=0 ms=1234\r\n@@lab begin vmm\r\npartial\r\n";
        let r = Results::parse(text);
        assert!(!r.done);
        let check = r.step("check").unwrap();
        assert_eq!(check.stdout, "{\"a\":1}\n");
        assert_eq!(check.rc, Some(0));
        assert_eq!(check.ms, 1234);
        assert!(check.stderr.starts_with("warning: x\n"));
        assert_eq!(r.ok("check").unwrap(), "{\"a\":1}\n");
        let vmm = r.step("vmm").unwrap();
        assert_eq!(vmm.rc, None);
        assert!(r.ok("vmm").unwrap_err().to_string().contains("never ended"));
        let missing = r.step("trace").unwrap_err().to_string();
        assert!(missing.contains("steps: check, vmm"), "{missing}");
    }

    #[test]
    fn gzip_base64_output_is_decoded() {
        use base64::Engine;
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"type\":\"summary\"}\n").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let (a, b) = b64.split_at(10);
        let text = format!("@@lab begin trace gzip+base64\n{a}\n{b}\n@@lab stderr trace\n@@lab end trace rc=0 ms=5\n");
        let r = Results::parse(&text);
        assert_eq!(r.ok("trace").unwrap(), "{\"type\":\"summary\"}\n");
        let broken = Results::parse("@@lab begin t gzip+base64\n!!\n@@lab end t rc=0 ms=1\n");
        assert_eq!(broken.step("t").unwrap().stdout, "");
        assert!(broken.step("t").unwrap().stderr.contains("undecodable"));
    }

    #[test]
    fn base64_steps_decode_to_their_bytes() {
        let r = Results::parse(
            "@@lab begin f\nAAEC\n/w==\n@@lab end f rc=0 ms=1\n\
             @@lab begin g\n!!\n@@lab end g rc=0 ms=1\n@@lab begin h\n@@lab end h rc=1 ms=1\n",
        );
        assert_eq!(r.base64("f").unwrap(), vec![0, 1, 2, 255]);
        assert!(r
            .base64("g")
            .unwrap_err()
            .to_string()
            .contains("step g: not base64"));
        assert!(r
            .base64("h")
            .unwrap_err()
            .to_string()
            .contains("exited with 1"));
    }

    #[test]
    fn done_marker() {
        let r = Results::parse("@@lab begin a\n@@lab end a rc=3 ms=1\n@@lab done\n");
        assert!(r.done);
        assert!(r.ok("a").unwrap_err().to_string().contains("exited with 3"));
    }
}
