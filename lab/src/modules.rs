//! A kernel module and its dependencies in load order, read from each module's `.modinfo`
//! section (`depends=`): Debian's packages ship no `modules.dep`, and `depmod` would need
//! the host's tools to agree with the guest kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSection};

use crate::{io_err, run, LabError, Result};

/// Module names as the kernel compares them: `-` and `_` are the same.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Every module file under `<lib/modules/release>/kernel`, by canonical name.
pub struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
}

/// One module to load: its canonical name and its ELF image (decompressed).
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    pub image: Vec<u8>,
}

impl ModuleTree {
    pub fn open(release_dir: &Path) -> Result<ModuleTree> {
        let mut files = BTreeMap::new();
        let mut stack = vec![release_dir.join("kernel")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
                let path = entry.map_err(io_err(&dir))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = module_name(&path) {
                    files.insert(canonical(&name), path);
                }
            }
        }
        Ok(ModuleTree { files })
    }

    /// `module` and what it needs, dependencies first. A dependency with no file is built
    /// into the kernel and skipped; `module` itself must exist.
    pub fn load_order(&self, module: &str) -> Result<Vec<Module>> {
        let root = canonical(module);
        if !self.files.contains_key(&root) {
            return Err(LabError::Module {
                module: module.into(),
                why: "no such module in this kernel's tree".into(),
            });
        }
        let mut order = Vec::new();
        let mut visiting = Vec::new();
        self.visit(&root, &mut visiting, &mut order)?;
        Ok(order)
    }

    fn visit(&self, name: &str, visiting: &mut Vec<String>, order: &mut Vec<Module>) -> Result<()> {
        if order.iter().any(|m| m.name == name) {
            return Ok(());
        }
        let Some(path) = self.files.get(name) else {
            return Ok(()); // built in
        };
        if visiting.iter().any(|v| v == name) {
            return Err(LabError::Module {
                module: name.into(),
                why: format!("dependency cycle through {}", visiting.join(" -> ")),
            });
        }
        visiting.push(name.to_string());
        let image = read_module(path)?;
        for dep in depends(&image).map_err(|why| LabError::Module {
            module: name.into(),
            why,
        })? {
            self.visit(&canonical(&dep), visiting, order)?;
        }
        visiting.pop();
        order.push(Module {
            name: name.to_string(),
            image,
        });
        Ok(())
    }
}

/// `kvm-amd` for `.../kvm-amd.ko.xz`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    ["ko", "ko.xz", "ko.zst", "ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(&format!(".{ext}")))
        .map(str::to_string)
}

/// The module's ELF image, decompressed with the tool its suffix names.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let file = path.to_string_lossy();
    let tool = if file.ends_with(".xz") {
        Some("xz")
    } else if file.ends_with(".zst") {
        Some("zstd")
    } else if file.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).map_err(io_err(path)),
        Some(tool) => run(Command::new(tool).arg("-dc").arg(path)),
    }
}

/// The `depends=` list of a module's `.modinfo` (empty when it depends on nothing).
pub fn depends(image: &[u8]) -> std::result::Result<Vec<String>, String> {
    let elf = object::File::parse(image).map_err(|e| format!("not an ELF module: {e}"))?;
    let modinfo = elf
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?
        .data()
        .map_err(|e| format!("unreadable .modinfo: {e}"))?;
    Ok(modinfo
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}
