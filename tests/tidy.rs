//! Invariants of the tree, checked rather than remembered (in the spirit of rust-analyzer's
//! tidy tests). Each rule is written down in ARCHITECTURE.md; the lists below name every
//! allowed exception and why.

use std::fs;
use std::path::{Path, PathBuf};

/// Source files may grow to this many lines; past it a file holds more than one job.
const MAX_LINES: usize = 800;

/// Files still past [`MAX_LINES`], each with the work that splits it. An entry that no
/// longer needs to be here is reported, not failed, so a split can land before this list.
const TOO_LONG_FOR_NOW: &[(&str, &str)] = &[];

/// Where `/proc` may be read: the host-facts layer (`hostfacts/src/`) and these files.
const PROC_READERS_DIRS: &[&str] = &["hostfacts/src/"];
const PROC_READERS: &[(&str, &str)] = &[(
    "lab/src/initramfs.rs",
    "the lab guest's mount points, not a read",
)];

/// Crates that touch the kernel, the terminal or the clock: the model must not depend on them.
const NOT_IN_MODEL: &[&str] = &[
    "hostfacts",
    "aya",
    "aya-log",
    "libc",
    "nix",
    "rustix",
    "procfs",
    "caps",
    "kvm-ioctls",
    "kvm-bindings",
    "ratatui",
    "crossterm",
    "tokio",
    "chrono",
    "time",
    "quanta",
    "coarsetime",
    "probes",
    "vmm",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file of the workspace, as a path relative to the root with `/` separators.
fn rust_files() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                walk(&path, root, out);
            } else if name.ends_with(".rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &root(), &mut out);
    out.sort();
    assert!(out.len() > 50, "found only {} Rust files", out.len());
    out
}

/// Production source: a crate's `src/` (or the binary's), not its tests, benches or the
/// `*tests.rs` modules that hold unit tests.
fn is_production(path: &str) -> bool {
    let in_src = path.starts_with("src/") || path.split('/').nth(1) == Some("src");
    in_src && !path.ends_with("tests.rs") && !path.contains("/tests/")
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") || t.starts_with("/*") || t.starts_with('*')
}

/// The names in a manifest's `[dependencies]` table.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = read(manifest);
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps && !t.is_empty() && !t.starts_with('#') {
            if let Some(name) = t.split(['=', '.', ' ']).next() {
                names.push(name.trim().to_string());
            }
        }
    }
    names
}

#[test]
fn model_touches_no_kernel_terminal_or_clock() {
    let deps = dependencies("model/Cargo.toml");
    let bad: Vec<_> = deps
        .iter()
        .filter(|d| NOT_IN_MODEL.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "model depends on {bad:?}");
    let mut clocks = Vec::new();
    for f in rust_files()
        .into_iter()
        .filter(|f| f.starts_with("model/src/"))
    {
        for (i, line) in read(&f).lines().enumerate() {
            if !is_comment(line)
                && (line.contains("Instant::now") || line.contains("SystemTime::now"))
            {
                clocks.push(format!("{f}:{}", i + 1));
            }
        }
    }
    assert!(clocks.is_empty(), "model reads the clock at {clocks:?}");
}

#[test]
fn views_do_not_import_probes() {
    for krate in ["tui", "export"] {
        let deps = dependencies(&format!("{krate}/Cargo.toml"));
        assert!(
            !deps.iter().any(|d| d == "probes"),
            "{krate} depends on probes"
        );
        let uses: Vec<_> = rust_files()
            .into_iter()
            .filter(|f| f.starts_with(&format!("{krate}/")))
            .filter(|f| read(f).contains("probes::"))
            .collect();
        assert!(uses.is_empty(), "{krate} names probes in {uses:?}");
    }
}

#[test]
fn proc_is_read_only_by_the_host_facts_layer() {
    let mut bad = Vec::new();
    for f in rust_files().into_iter().filter(|f| is_production(f)) {
        let in_dir = PROC_READERS_DIRS.iter().any(|d| f.starts_with(d));
        if in_dir || PROC_READERS.iter().any(|(p, _)| *p == f) {
            continue;
        }
        for (i, line) in read(&f).lines().enumerate() {
            if !is_comment(line) && line.contains("\"/proc") {
                bad.push(format!("{f}:{}", i + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "/proc read outside {PROC_READERS_DIRS:?} and the files tests/tidy.rs names: {bad:?}"
    );
}

#[test]
fn every_unsafe_has_a_safety_comment() {
    // The comment may sit on the line itself or on the lines just above the statement; one
    // `SAFETY (all impls below):` comment covers a run of `unsafe impl` lines.
    const LOOK_BACK: usize = 6;
    let mut bad = Vec::new();
    for f in rust_files().into_iter().filter(|f| f != "tests/tidy.rs") {
        let text = read(&f);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if is_comment(line) || !(line.contains("unsafe {") || line.contains("unsafe impl")) {
                continue;
            }
            let mut run_start = i;
            while run_start > 0 && lines[run_start - 1].contains("unsafe impl") {
                run_start -= 1;
            }
            let from = run_start.saturating_sub(LOOK_BACK);
            if !lines[from..=i].iter().any(|l| l.contains("SAFETY")) {
                bad.push(format!("{f}:{}", i + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe without a `SAFETY:` comment at {bad:?}"
    );
}

#[test]
fn source_files_stay_short() {
    let mut bad = Vec::new();
    for f in rust_files().into_iter().filter(|f| is_production(f)) {
        let n = read(&f).lines().count();
        let listed = TOO_LONG_FOR_NOW.iter().any(|(p, _)| *p == f);
        if n > MAX_LINES && !listed {
            bad.push(format!("{f}: {n} lines"));
        }
        if n <= MAX_LINES && listed {
            eprintln!("{f} is {n} lines now: take it off TOO_LONG_FOR_NOW in tests/tidy.rs");
        }
    }
    assert!(
        bad.is_empty(),
        "past {MAX_LINES} lines (split by job): {bad:?}"
    );
}
