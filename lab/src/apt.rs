//! Debian packages by name, through apt state of the lab's own: one directory per suite
//! (`sources.list`, lists, apt's cache) under `<cache>/apt/<suite>`, and the downloaded
//! `.deb`s under `<cache>/debs`. The host's apt sources and state are never read or changed.
//! Lists are refreshed when older than a day; offline, what is cached is used.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::{io_err, run, LabError, Result};

/// How old a suite's package lists may get before `apt-get update` runs again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const MIRROR: &str = "http://deb.debian.org/debian";

pub struct Archive {
    root: PathBuf,
}

impl Archive {
    /// The archive cached under `cache` (see [`crate::cache_dir`]).
    pub fn new(cache: &Path) -> Archive {
        Archive {
            root: cache.to_path_buf(),
        }
    }

    pub fn debs_dir(&self) -> PathBuf {
        self.root.join("debs")
    }

    fn suite_dir(&self, suite: &str) -> PathBuf {
        self.root.join("apt").join(suite)
    }

    /// apt options that point every piece of state at the suite's own directory.
    fn options(&self, suite: &str) -> Vec<String> {
        let d = self.suite_dir(suite);
        let d = d.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            "-oDir::State::status=/dev/null".into(),
            // The debs directory belongs to root: do not drop to the _apt user for it.
            "-oAPT::Sandbox::User=root".into(),
            "-q".into(),
        ]
    }

    /// Refreshes `suite`'s package lists if they are missing or older than a day. A failed
    /// refresh with older lists present is not an error (offline runs use the cache).
    pub fn update(&self, suite: &str) -> Result<()> {
        let d = self.suite_dir(suite);
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(d.join(sub)).map_err(io_err(d.join(sub)))?;
        }
        let sources = d.join("sources.list");
        let line = format!("deb {MIRROR} {suite} main\n");
        if std::fs::read_to_string(&sources).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(&sources, line).map_err(io_err(&sources))?;
        }
        let stamp = d.join("lists/updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if fresh {
            return Ok(());
        }
        match run(Command::new("apt-get")
            .args(self.options(suite))
            .arg("update"))
        {
            Ok(_) => std::fs::write(&stamp, b"").map_err(io_err(&stamp)),
            Err(e) if stamp.exists() => {
                eprintln!("lab: cannot refresh the {suite} lists, using the old ones: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The highest-versioned package of `suite` whose name `accept`s, by apt's lists, or
    /// else among the cached debs. `what` describes the pattern for errors.
    pub fn newest(&self, suite: &str, what: &str, accept: impl Fn(&str) -> bool) -> Result<String> {
        let listed = self.update(suite).and_then(|()| {
            let out = run(Command::new("apt-cache")
                .args(self.options(suite))
                .arg("pkgnames"))?;
            Ok(String::from_utf8_lossy(&out)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>())
        });
        let names = match listed {
            Ok(names) => names,
            Err(e) => {
                eprintln!("lab: no {suite} package lists ({e}); looking at the cached debs");
                self.cached_names()
            }
        };
        names
            .into_iter()
            .filter(|n| accept(n))
            .max_by(|a, b| version_order(a, b))
            .ok_or_else(|| LabError::NoPackage {
                suite: suite.into(),
                what: what.into(),
                cache: self.debs_dir(),
            })
    }

    /// The cached `.deb` of package `name`, downloaded from `suite` if absent.
    pub fn deb(&self, suite: &str, name: &str) -> Result<PathBuf> {
        let debs = self.debs_dir();
        if let Some(found) = self.cached_deb(name) {
            return Ok(found);
        }
        std::fs::create_dir_all(&debs).map_err(io_err(&debs))?;
        self.update(suite)?;
        run(Command::new("apt-get")
            .args(self.options(suite))
            .args(["download", name])
            .current_dir(&debs))?;
        self.cached_deb(name).ok_or_else(|| LabError::NoPackage {
            suite: suite.into(),
            what: format!("{name} (apt-get download left no file)"),
            cache: debs,
        })
    }

    /// The packages `names` of `suite` unpacked together (`dpkg-deb -x`, never installed)
    /// into one cached directory, named after the first package's deb.
    pub fn unpacked(&self, suite: &str, names: &[&str]) -> Result<PathBuf> {
        let debs: Vec<PathBuf> = names
            .iter()
            .map(|n| self.deb(suite, n))
            .collect::<Result<_>>()?;
        let stem = debs[0].file_stem().unwrap_or_default().to_os_string();
        let dir = self.root.join("unpacked").join(&stem);
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
        // Unpack beside the final place and rename: an interrupted run leaves no half tree.
        let partial = self
            .root
            .join("unpacked")
            .join(format!("{}.partial", stem.to_string_lossy()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(io_err(&partial))?;
        for deb in &debs {
            run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
        }
        std::fs::write(partial.join(".complete"), b"").map_err(io_err(&partial))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    fn cached_deb(&self, name: &str) -> Option<PathBuf> {
        let prefix = format!("{name}_");
        std::fs::read_dir(self.debs_dir())
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let f = p.file_name().unwrap_or_default().to_string_lossy();
                f.starts_with(&prefix) && f.ends_with(".deb")
            })
            .max()
    }

    fn cached_names(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.debs_dir()) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                f.strip_suffix(".deb")?
                    .split('_')
                    .next()
                    .map(str::to_string)
            })
            .collect()
    }
}

/// Orders package names as versions: runs of digits compare as numbers
/// (`linux-image-6.1.0-9-...` < `linux-image-6.1.0-50-...`).
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x, y) {
            ((true, m), (true, n)) => m
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .cmp(&n.parse::<u64>().unwrap_or(u64::MAX)),
            ((_, m), (_, n)) => m.cmp(n),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_numbers_compare_as_numbers() {
        let mut names = [
            "linux-image-6.1.0-50-amd64-unsigned",
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-47-amd64-unsigned",
        ];
        names.sort_by(|a, b| version_order(a, b));
        assert_eq!(names[2], "linux-image-6.1.0-50-amd64-unsigned");
        assert_eq!(names[0], "linux-image-6.1.0-9-amd64-unsigned");
        assert!(version_order(
            "linux-binary-7.2.13+deb14-amd64",
            "linux-binary-7.10.1+deb14-amd64"
        )
        .is_lt());
    }
}
