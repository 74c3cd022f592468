//! The QEMU command-line grammar kvmscope reads: `-opt VALUE` in its four spellings, QEMU's
//! comma-separated option strings (`,,` a literal comma), the VM's name, and its QMP sockets.

use std::collections::HashMap;
use std::path::PathBuf;

/// The guest name of `-name [guest=]NAME[,process=...][,debug-threads=on]`.
pub(super) fn vm_name(argv: &[String]) -> Option<String> {
    let value = option_values(argv, "name").into_iter().last()?;
    let mut positional = None;
    for (i, part) in split_qemu_opts(&value).into_iter().enumerate() {
        match part.split_once('=') {
            Some(("guest", v)) => return Some(v.to_string()).filter(|v| !v.is_empty()),
            Some(_) => {}
            None if i == 0 => positional = Some(part),
            None => {}
        }
    }
    positional.filter(|v| !v.is_empty())
}

/// Values of `-opt VALUE`, `--opt VALUE`, `-opt=VALUE` and `--opt=VALUE`, in order.
fn option_values(argv: &[String], opt: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        if flag == opt {
            if let Some(v) = args.next() {
                out.push(v.clone());
            }
        } else if let Some(v) = flag.strip_prefix(opt).and_then(|r| r.strip_prefix('=')) {
            out.push(v.to_string());
        }
    }
    out
}

/// Split a QEMU option string on commas; `,,` is a literal comma.
fn split_qemu_opts(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

/// QMP sockets named on a QEMU command line: `-qmp unix:PATH[,...]` (and `-qmp-pretty`),
/// `-chardev socket,id=ID,path=PATH` used by `-mon chardev=ID,mode=control`, and the
/// `-mon` shorthand's `-monitor`-free equivalents are not QMP, so HMP sockets are skipped.
pub(super) fn qmp_sockets_from_argv(argv: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for opt in ["qmp", "qmp-pretty"] {
        for value in option_values(argv, opt) {
            let first = split_qemu_opts(&value)
                .into_iter()
                .next()
                .unwrap_or_default();
            if let Some(path) = first.strip_prefix("unix:") {
                out.push(PathBuf::from(path));
            }
        }
    }
    // chardev id → path, for unix socket chardevs.
    let mut chardevs = HashMap::new();
    for value in option_values(argv, "chardev") {
        let parts = split_qemu_opts(&value);
        if parts.first().map(String::as_str) != Some("socket") {
            continue;
        }
        let kv: HashMap<&str, &str> = parts.iter().filter_map(|p| p.split_once('=')).collect();
        if let (Some(id), Some(path)) = (kv.get("id"), kv.get("path")) {
            chardevs.insert(id.to_string(), PathBuf::from(path));
        }
    }
    for value in option_values(argv, "mon") {
        let parts = split_qemu_opts(&value);
        let kv: HashMap<&str, &str> = parts.iter().filter_map(|p| p.split_once('=')).collect();
        if kv.get("mode") == Some(&"control") {
            if let Some(path) = kv.get("chardev").and_then(|id| chardevs.get(*id)) {
                out.push(path.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn names_come_from_guest_or_the_plain_value() {
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name guest=web,debug-threads=on")),
            Some("web".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name db")),
            Some("db".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 --name db,process=qemu-db")),
            Some("db".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name debug-threads=on,guest=x")),
            Some("x".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name a,,b")),
            Some("a,b".into())
        );
        assert_eq!(vm_name(&argv("qemu-system-x86_64 -m 128")), None);
        assert_eq!(vm_name(&argv("qemu-system-x86_64 -name")), None);
    }

    #[test]
    fn qmp_sockets_come_from_qmp_and_control_monitors() {
        let a = argv(
            "qemu-system-x86_64 -qmp unix:/tmp/a.sock,server=on,wait=off \
             -chardev socket,id=hmp,path=/tmp/hmp.sock,server=on \
             -mon chardev=hmp,mode=readline \
             -chardev socket,id=ctl,path=/tmp/ctl.sock,server=on,wait=off \
             -mon chardev=ctl,mode=control -qmp tcp:localhost:4444",
        );
        assert_eq!(
            qmp_sockets_from_argv(&a),
            vec![PathBuf::from("/tmp/a.sock"), PathBuf::from("/tmp/ctl.sock")]
        );
        assert_eq!(
            qmp_sockets_from_argv(&argv("qemu -qmp unix:/x,server,nowait")),
            vec![PathBuf::from("/x")]
        );
    }
}
