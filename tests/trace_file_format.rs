//! The trace file format without root: round trips, truncation at and inside every chunk,
//! bit flips, random bytes, and the clear errors for files that are not traces.

mod trace_file_synth;

use std::io::Cursor;

use model::trace_file::*;
use model::Event;
use trace_file_synth::*;

fn read_bytes(bytes: &[u8]) -> Result<(Vec<Event>, ReadStats, Option<Trailer>), TraceError> {
    let mut r = TraceReader::new(Cursor::new(bytes), "test.trace")?;
    let mut events = Vec::new();
    while r.next_chunk(&mut events)? {}
    Ok((events, r.stats().clone(), r.trailer().cloned()))
}

/// Chunk frames of a finished trace: (offset, events in it), trailer last with 0 events.
fn frames(bytes: &[u8]) -> (Vec<ChunkInfo>, u64) {
    let mut r = TraceReader::new(Cursor::new(bytes), "test.trace").unwrap();
    let index = r.index().unwrap();
    let first = index.first().map_or(bytes.len() as u64, |c| c.offset);
    (index, first)
}

fn trailer_offset(bytes: &[u8]) -> usize {
    // The trailer is the last frame: sync bytes then kind 3.
    bytes.windows(5).rposition(|w| w == b"KVCK\x03").unwrap()
}

#[test]
fn demo_like_stream_round_trips_compactly() {
    let events = demo_like(300_000, 1);
    let bytes = write_trace(&events, WriterOptions::default().chunk_bytes);
    let (back, stats, trailer) = read_bytes(&bytes).unwrap();
    assert_eq!(back.len(), events.len());
    assert!(back == events, "events differ after a round trip");
    assert!(stats.problems().is_empty(), "{:?}", stats.problems());
    let trailer = trailer.unwrap();
    assert_eq!(trailer.events, events.len() as u64);
    let lost: u64 = events
        .iter()
        .map(|e| if let Event::Lost(l) = e { l.count } else { 0 })
        .sum();
    assert_eq!(trailer.lost, lost);
    assert_eq!(
        trailer.start_ts,
        events.iter().map(Event::ts).min().unwrap()
    );
    assert_eq!(trailer.end_ts, events.iter().map(Event::ts).max().unwrap());
    assert_eq!(trailer.processes.len(), 2, "{:?}", trailer.processes);
    assert_eq!(trailer.processes[1].threads[1].vcpu, Some(1));
    let per_event = bytes.len() as f64 / events.len() as f64;
    eprintln!("demo-like synthetic stream: {per_event:.2} bytes/event");
    // Synthetic values are far more random than real ones (real demo: see the bench); the
    // bound still catches an encoding regression such as losing the delta/varint coding.
    assert!(per_event < 8.0, "{per_event:.2} bytes/event");
}

#[test]
fn arbitrary_values_in_every_field_round_trip() {
    for seed in 0..20 {
        let events = arbitrary(5_000, seed);
        let bytes = write_trace(&events, 4096);
        let (back, stats, _) = read_bytes(&bytes).unwrap();
        assert!(stats.problems().is_empty(), "{:?}", stats.problems());
        for (i, (a, b)) in events.iter().zip(&back).enumerate() {
            assert_eq!(a, b, "seed {seed} event {i}");
        }
        assert_eq!(back.len(), events.len());
    }
}

#[test]
fn header_round_trips() {
    let bytes = write_trace(&demo_like(10, 2), 1 << 20);
    let r = TraceReader::new(Cursor::new(&bytes), "x").unwrap();
    assert_eq!(r.header(), &header());
}

#[test]
fn unfinished_recording_keeps_every_ended_chunk() {
    let events = demo_like(50_000, 3);
    let mut w = TraceWriter::with_options(
        Vec::new(),
        &header(),
        WriterOptions {
            chunk_bytes: 8192,
            ..Default::default()
        },
    )
    .unwrap();
    for e in &events {
        w.write(e).unwrap();
    }
    w.end_chunk().unwrap();
    let bytes = w.get_ref().clone();
    drop(w);
    let (back, stats, trailer) = read_bytes(&bytes).unwrap();
    assert!(back == events);
    assert!(trailer.is_none());
    assert!(!stats.finalised);
    assert_eq!(stats.truncated_bytes, 0);
    assert_eq!(stats.problems().len(), 1, "{:?}", stats.problems());
}

#[test]
fn truncation_at_and_inside_every_chunk_keeps_complete_chunks() {
    let events = demo_like(10_000, 4);
    let bytes = write_trace(&events, 3000);
    let (index, _) = frames(&bytes);
    assert!(index.len() > 20, "want many chunks, got {}", index.len());
    let trailer_at = trailer_offset(&bytes);
    let mut boundaries: Vec<usize> = index.iter().map(|c| c.offset as usize).collect();
    boundaries.push(trailer_at);
    let mut before = 0usize;
    for (k, &b) in boundaries.iter().enumerate() {
        let next = boundaries.get(k + 1).copied().unwrap_or(bytes.len());
        for cut in [b, b + 1, b + 16, b + 17, b + 18, (b + next) / 2, next - 1] {
            if cut > bytes.len() || (cut == bytes.len()) {
                continue;
            }
            let (back, stats, trailer) = read_bytes(&bytes[..cut]).unwrap();
            assert_eq!(back.len(), before, "cut at {cut} (chunk {k} starts at {b})");
            assert!(back[..] == events[..before]);
            assert_eq!(stats.truncated_bytes, (cut - b) as u64, "cut at {cut}");
            assert_eq!(stats.corrupt_chunks, 0);
            assert!(trailer.is_none());
            if cut > b {
                assert!(
                    stats.problems()[0].contains("truncated"),
                    "{:?}",
                    stats.problems()
                );
            }
        }
        before += index.get(k).map_or(0, |c| c.events as usize);
    }
    assert_eq!(before, events.len());
}

#[test]
fn truncation_inside_the_header_is_a_clear_error() {
    let bytes = write_trace(&demo_like(100, 5), 1 << 20);
    let (_, first_chunk) = frames(&bytes);
    for cut in 1..first_chunk as usize {
        let err = read_bytes(&bytes[..cut]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, TraceError::NoHeader { .. }),
            "cut at {cut}: {msg}"
        );
        assert!(
            msg.contains("test.trace") && msg.contains("header"),
            "{msg}"
        );
    }
}

#[test]
fn a_flipped_bit_loses_exactly_the_chunk_it_hit() {
    let events = demo_like(8_000, 6);
    let bytes = write_trace(&events, 3000);
    let (index, first_chunk) = frames(&bytes);
    let trailer_at = trailer_offset(&bytes) as u64;
    let mut rng = Rng::new(7);
    for _ in 0..250 {
        let pos = first_chunk + rng.below(bytes.len() as u64 - first_chunk);
        let mut damaged = bytes.clone();
        damaged[pos as usize] ^= 1 << rng.below(8);
        let (back, stats, trailer) = read_bytes(&damaged).unwrap();
        assert_eq!(stats.corrupt_chunks, 1, "flip at {pos}");
        assert_eq!(stats.truncated_bytes, 0);
        if pos >= trailer_at {
            assert!(back == events);
            assert!(trailer.is_none());
            continue;
        }
        let k = index.iter().rposition(|c| c.offset <= pos).unwrap();
        let skip_from: usize = index[..k].iter().map(|c| c.events as usize).sum();
        let skip_to = skip_from + index[k].events as usize;
        assert_eq!(
            back.len(),
            events.len() - index[k].events as usize,
            "flip at {pos}"
        );
        assert!(back[..skip_from] == events[..skip_from]);
        assert!(back[skip_from..] == events[skip_to..]);
        assert!(trailer.is_some());
        assert!(stats.problems().iter().any(|p| p.contains("corrupt")));
    }
}

/// Every flip is refused in one line, but one that makes the version an older one: a reader
/// reads every older version the same way (it only refuses newer ones), so that reads the
/// same events.
#[test]
fn flips_in_the_preamble_or_header_are_clear_errors() {
    let events = demo_like(100, 8);
    let bytes = write_trace(&events, 1 << 20);
    let (_, first_chunk) = frames(&bytes);
    for pos in 0..first_chunk as usize {
        if (10..12).contains(&pos) {
            continue; // reserved bytes
        }
        for bit in [0, 7] {
            let mut damaged = bytes.clone();
            damaged[pos] ^= 1 << bit;
            let version = u16::from_le_bytes([damaged[8], damaged[9]]);
            if (1..FORMAT_VERSION).contains(&version) {
                let (back, stats, _) = read_bytes(&damaged).unwrap();
                assert!(
                    back == events && stats.problems().is_empty(),
                    "as version {version}"
                );
                continue;
            }
            match read_bytes(&damaged) {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("cannot read test.trace: "), "{msg}");
                }
                Ok(_) => panic!("flip at {pos} bit {bit} was not noticed"),
            }
        }
    }
}

#[test]
fn random_bytes_never_panic_and_are_refused() {
    let mut rng = Rng::new(9);
    let good = write_trace(&demo_like(2_000, 10), 2000);
    let (_, first_chunk) = frames(&good);
    for i in 0..3000 {
        let len = rng.below(3000) as usize;
        let mut bytes = rng.bytes(len);
        match i % 3 {
            // Plain noise: refused by the magic check (or empty).
            0 => match read_bytes(&bytes) {
                Err(TraceError::Empty { .. }) => assert_eq!(len, 0),
                Err(TraceError::BadMagic { .. }) => {}
                other => panic!("noise of {len} bytes: {:?}", other.map(|r| r.0.len())),
            },
            // A valid preamble and header, then noise: read, nothing decoded, damage counted.
            1 => {
                let mut file = good[..first_chunk as usize].to_vec();
                file.append(&mut bytes);
                let (back, stats, _) = read_bytes(&file).unwrap();
                assert!(back.is_empty());
                assert!(len < 17 || stats.corrupt_chunks + stats.truncated_bytes > 0);
            }
            // A real trace with a noisy stretch pasted over it.
            _ => {
                let mut file = good.clone();
                let at = first_chunk as usize + rng.below(file.len() as u64 - first_chunk) as usize;
                for (j, b) in bytes.iter().take(200).enumerate() {
                    if let Some(x) = file.get_mut(at + j) {
                        *x = *b;
                    }
                }
                let _ = read_bytes(&file).unwrap();
            }
        }
    }
}

#[test]
fn newer_version_is_refused_with_the_versions() {
    let mut bytes = write_trace(&demo_like(10, 11), 1 << 20);
    bytes[8] = 9;
    let msg = read_bytes(&bytes).unwrap_err().to_string();
    assert_eq!(
        msg,
        "cannot read test.trace: written by a newer kvmscope (trace format version 9; this \
         one reads up to 4); upgrade kvmscope"
    );
}

/// Version 2 changed no encoding (it marks files older readers would skip chunks of): a
/// version-1 file, counter samples, affinity and unobserved records included, reads as before.
#[test]
fn version_1_files_still_read() {
    let mut events = arbitrary(5_000, 12);
    let ts = events[2_500].ts();
    events.push(Event::Affinity(model::Affinity {
        ts,
        tid: 7,
        cpus: vec![0, 3],
    }));
    events.push(Event::CounterSample(model::CounterSample {
        ts,
        cpu: 1,
        tid: 7,
        pid: 7,
        run_ns: 5_000,
        wait_ns: 300,
        timeslices: 4,
        task_clock_ns: Some(4_900),
        voluntary_switches: 2,
        involuntary_switches: 1,
        migrations: 1,
        vruntime: 123_456,
        weight: 1024,
        allowed_cpus: 2,
    }));
    let mut bytes = write_trace(&events, 16 << 10);
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), FORMAT_VERSION);
    assert_eq!(FORMAT_VERSION, 4);
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let (back, stats, _) = read_bytes(&bytes).unwrap();
    assert!(stats.problems().is_empty(), "{:?}", stats.problems());
    assert!(back == events, "a version-1 file reads otherwise");
    for kind in ["counter_sample", "affinity", "unobserved"] {
        assert!(
            back.iter()
                .any(|e| serde_json::to_value(e).unwrap()["type"] == kind),
            "no {kind} in the stream"
        );
    }
}

#[test]
fn paths_that_are_not_traces_give_clear_errors() {
    let dir = std::env::temp_dir().join(format!("kvmscope-trace-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.trace");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.txt");
    std::fs::write(&text, b"hello, this is not a trace\n").unwrap();
    let cases = [
        (dir.clone(), "it is a directory"),
        (empty.clone(), "the file is empty"),
        (text.clone(), "not a kvmscope trace"),
        (dir.join("missing.trace"), "no such file"),
    ];
    for (path, want) in cases {
        let msg = open(&path).err().expect("should fail").to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert_eq!(msg.lines().count(), 1);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn index_and_seek_give_random_access_to_chunks() {
    let events = demo_like(20_000, 12);
    let bytes = write_trace(&events, 4000);
    let mut r = TraceReader::new(Cursor::new(&bytes), "test.trace").unwrap();
    let index = r.index().unwrap();
    assert_eq!(
        index.iter().map(|c| c.events as usize).sum::<usize>(),
        events.len()
    );
    let mut first = 0usize;
    let mut starts = Vec::new();
    for c in &index {
        starts.push(first);
        let slice = &events[first..first + c.events as usize];
        assert_eq!(c.min_ts, slice.iter().map(Event::ts).min().unwrap());
        assert_eq!(c.max_ts, slice.iter().map(Event::ts).max().unwrap());
        first += c.events as usize;
    }
    // Indexing left the position alone: the first chunk comes next.
    let mut got = Vec::new();
    assert!(r.next_chunk(&mut got).unwrap());
    assert!(got[..] == events[..index[0].events as usize]);
    // Jump backwards and forwards.
    for k in [index.len() - 1, 3, 0, index.len() / 2] {
        r.seek_to(index[k].offset).unwrap();
        got.clear();
        assert!(r.next_chunk(&mut got).unwrap());
        assert!(
            got[..] == events[starts[k]..starts[k] + index[k].events as usize],
            "chunk {k}"
        );
    }
}

/// A finished file read back cleanly: its events and trailer, which counts them, and whose
/// `lost` its `Lost` events add up to.
fn read_finished(bytes: &[u8]) -> (Vec<Event>, Trailer) {
    let (back, stats, trailer) = read_bytes(bytes).unwrap();
    assert!(stats.problems().is_empty(), "{:?}", stats.problems());
    let trailer = trailer.unwrap();
    assert_eq!(back.len() as u64, trailer.events);
    assert_eq!(lost_sum(&back), trailer.lost);
    (back, trailer)
}

/// The sum of the `Lost` events' counts.
fn lost_sum(events: &[Event]) -> u64 {
    events
        .iter()
        .map(|e| if let Event::Lost(l) = e { l.count } else { 0 })
        .sum()
}

/// `record`'s two halves (a `ChunkBuilder` on the reading thread, a `ChunkWriter` on the
/// writer thread) make the same file as `TraceWriter`; a chunk the writer had no room for
/// leaves a `Lost` event with its event count, and the trailer counts it as lost, not written.
#[test]
fn split_writer_matches_trace_writer_and_counts_a_discarded_chunk_as_lost() {
    let events = demo_like(50_000, 3);
    let opts = WriterOptions {
        chunk_bytes: 64 << 10,
        ..WriterOptions::default()
    };
    let whole = {
        let mut w = TraceWriter::with_options(Vec::new(), &header(), opts).unwrap();
        events.iter().for_each(|e| w.write(e).unwrap());
        w.finish().unwrap().0
    };
    let split = |discard_second: bool| {
        let mut builder = ChunkBuilder::new(&header(), opts);
        let mut writer = ChunkWriter::new(Vec::new(), &header(), opts.zstd_level).unwrap();
        let (mut sealed, mut discarded, mut discarded_records) = (0, 0u64, 0u64);
        let mut chunk_events = Vec::new();
        for e in &events {
            chunk_events.push(e.clone());
            let Some(chunk) = builder.push(e) else {
                continue;
            };
            sealed += 1;
            if discard_second && sealed == 2 {
                // What the chunk stood for: its events, a Lost one by what it counted.
                let records = chunk_events
                    .iter()
                    .filter(|e| !matches!(e, Event::Lost(_)))
                    .count();
                discarded_records = records as u64;
                discarded = discarded_records + lost_sum(&chunk_events);
                assert_eq!(chunk.events() as usize, chunk_events.len());
                let d = builder.discard(chunk);
                assert!(d.filled.is_empty());
                // Its Lost records are no events of its own: their counts carry over.
                assert_eq!(d.events, discarded_records);
            } else {
                writer.write_chunk(&chunk).unwrap();
            }
            chunk_events.clear();
        }
        if let Some(chunk) = builder.seal() {
            writer.write_chunk(&chunk).unwrap();
        }
        let trailer = builder.trailer(writer.chunks());
        (
            writer.finish(trailer).unwrap().0,
            discarded,
            discarded_records,
        )
    };
    assert!(split(false).0 == whole, "the two halves wrote another file");

    let (bytes, discarded, discarded_records) = split(true);
    assert!(discarded > 0);
    // The trailer's lost count now has the discarded chunk's records besides every loss the
    // stream reported.
    let (back, trailer) = read_finished(&bytes);
    assert_eq!(trailer.lost, lost_sum(&events) + discarded_records);
    assert!(back
        .iter()
        .any(|e| matches!(e, Event::Lost(l) if l.cpu == u32::MAX && l.count == discarded)));
}

/// A chunk discarded in the middle of a stream loses its events only: the threads it
/// announced, their affinity, a VM's end and what the source could not observe go into the
/// next chunk, so a reader (and the model over it) still knows them.
#[test]
fn a_discarded_chunk_hands_its_bookkeeping_records_on() {
    let mut events = demo_like(50_000, 5);
    let at = 15_000;
    let ts = events[at].ts();
    let records = [
        Event::TaskInfo(model::TaskInfo {
            ts,
            tid: 4301,
            pid: 4300,
            comm: model::Comm::new("vm2-vcpu0"),
            vm: "vm2".into(),
            vcpu: Some(0),
            nice: 3,
            schedstat: None,
            start: None,
        }),
        Event::Affinity(model::Affinity {
            ts,
            tid: 4301,
            cpus: vec![1],
        }),
        Event::VmEnded(model::VmEnded {
            ts,
            pid: 4200,
            vm: "vm1".into(),
        }),
        Event::Unobserved(model::Unobserved {
            ts,
            what: model::UnobservedKind::Threads,
            count: 1,
        }),
        Event::Lost(model::Lost {
            ts,
            cpu: 1,
            count: 7,
        }),
    ];
    events.splice(at..at, records.iter().cloned());
    let opts = WriterOptions {
        chunk_bytes: 64 << 10,
        ..WriterOptions::default()
    };
    let mut builder = ChunkBuilder::new(&header(), opts);
    let mut writer = ChunkWriter::new(Vec::new(), &header(), opts.zstd_level).unwrap();
    let (mut chunk_start, mut discarded, mut written_before) = (0, None, 0);
    for (i, e) in events.iter().enumerate() {
        let Some(chunk) = builder.push(e) else {
            continue;
        };
        if (chunk_start..=i).contains(&at) {
            // Its events but the Lost ones and the four records above that are no losses.
            let lost_records = events[chunk_start..=i]
                .iter()
                .filter(|e| matches!(e, Event::Lost(_)))
                .count();
            let d = builder.discard(chunk);
            assert!(d.filled.is_empty());
            assert_eq!(d.events, (i + 1 - chunk_start - lost_records - 4) as u64);
            discarded = Some(d.events);
            written_before = writer.chunks();
        } else {
            writer.write_chunk(&chunk).unwrap();
        }
        chunk_start = i + 1;
    }
    if let Some(chunk) = builder.seal() {
        writer.write_chunk(&chunk).unwrap();
    }
    let discarded = discarded.expect("the records' chunk was sealed");
    assert!(written_before > 0 && writer.chunks() > written_before + 1);
    let trailer = builder.trailer(writer.chunks());
    let bytes = writer.finish(trailer).unwrap().0;

    let (back, trailer) = read_finished(&bytes);
    assert_eq!(trailer.lost, lost_sum(&events) + discarded);
    for r in &records[..4] {
        assert_eq!(back.iter().filter(|e| *e == r).count(), 1, "{r:?}");
    }
    assert!(trailer.processes.iter().any(|p| p.pid == 4300));

    // The model over the file knows the thread and the VM's end.
    let mut model = model::Model::new(model::ModelConfig::default());
    model.ingest_batch(&back);
    model.finish();
    let snap = model.snapshot();
    let vcpu = snap
        .vcpus
        .iter()
        .find(|v| v.tid == 4301)
        .expect("thread 4301");
    assert_eq!(
        (vcpu.vm.as_str(), vcpu.vcpu, vcpu.nice),
        ("vm2", Some(0), 3)
    );
    assert!(snap.vms.iter().any(|vm| vm.name == "vm1" && vm.ended));
    assert_eq!(snap.health.track_failures, 1);
    // The records kept their times, which are still after all the model saw before them.
    assert_eq!(snap.health.out_of_order, 0, "{:?}", snap.health.notes);
}
