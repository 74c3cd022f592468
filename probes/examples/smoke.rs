use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
fn main() {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..3 {
        let (stop, tx) = (stop.clone(), tx.clone());
        std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) { x = std::hint::black_box(x.wrapping_add(1)); }
        });
    }
    let tids: Vec<u32> = (0..3).map(|_| rx.recv().unwrap()).collect();
    let mut p = probes::loader::Probes::load(Default::default()).unwrap();
    for &t in &tids { p.track(t).unwrap(); }
    println!("tids {tids:?}");
    let prog = format!("tracepoint:sched:sched_switch /args.next_pid == {} || args.next_pid == {} || args.next_pid == {}/ {{ @in[args.next_pid] = count(); }} tracepoint:sched:sched_switch /args.prev_pid == {} || args.prev_pid == {} || args.prev_pid == {}/ {{ @out[args.prev_pid] = count(); }} interval:s:8 {{ exit(); }}", tids[0], tids[1], tids[2], tids[0], tids[1], tids[2]);
    let bt = std::process::Command::new("bpftrace").arg("-e").arg(prog).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut ev = Vec::new();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(12);
    while std::time::Instant::now() < end { p.poll(&mut ev, std::time::Duration::from_millis(100)).unwrap(); }
    let out = bt.wait_with_output().unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    stop.store(true, Ordering::Relaxed);
    let mut sw: Vec<_> = ev.iter().filter_map(|e| if let model::Event::SchedSwitch(s) = e { Some(*s) } else { None }).collect();
    sw.sort_by_key(|s| s.ts);
    println!("{} switches, lost {}", sw.len(), p.lost_total());
    for &t in &tids {
        let (mut ins, mut outs, mut state) = (0, 0, None::<bool>);
        for (k, s) in sw.iter().enumerate() {
            if s.next_tid == t { ins += 1; if state == Some(true) { println!("{t}: in-in at {k} {} cpu{} {}->{}", s.ts, s.cpu, s.prev_tid, s.next_tid); } state = Some(true); }
            if s.prev_tid == t { outs += 1; if state == Some(false) { println!("{t}: out-out at {k} {} cpu{} {}->{}", s.ts, s.cpu, s.prev_tid, s.next_tid); for q in &sw[k.saturating_sub(12)..k] { println!("   {} cpu{} {}->{} {:?}", q.ts, q.cpu, q.prev_tid, q.next_tid, q.prev_comm); } } state = Some(false); }
        }
        println!("{t}: ins {ins} outs {outs}");
    }
}
