//! Publishing the VMs' names for a watcher that attaches with `--pid` (the contract is
//! `model::VmNames`): a memfd the VMM holds while it runs, found among its descriptors.

use std::fs::File;
use std::io::Write;

use model::{VmNames, VM_NAMES_MEMFD};

use crate::error::VmmError;

/// Writes `names` into a new memfd named [`VM_NAMES_MEMFD`]. Keep the file open while the VMs
/// run: closing it unpublishes them.
pub fn publish(names: &VmNames) -> Result<File, VmmError> {
    let err = |err| VmmError::Setup {
        vm: "the host".into(),
        what: "publish the VM names in a memfd",
        err,
    };
    let fd = rustix::fs::memfd_create(VM_NAMES_MEMFD, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| err(e.into()))?;
    let mut file = File::from(fd);
    file.write_all(names.to_text().as_bytes()).map_err(err)?;
    Ok(file)
}
