//! Random operation sequences on a `MappedFile` and its reference, compared result by result
//! and byte by byte.

use super::model::*;
use super::*;

/// Prints what reruns a failing case when the case panics.
struct Rerun<'a> {
    setup: &'a Setup,
    seed: u64,
    log: Vec<String>,
}

impl Drop for Rerun<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let tail = self.log.len().saturating_sub(25);
            eprintln!(
                "differential case failed: setup {:?}, seed {:#x}\n  rerun: SEGPOOL_DIFF_SEED={:#x} cargo test -p segpool --test fs_differential random_\n  last operations:\n    {}",
                self.setup.name,
                self.seed,
                self.seed,
                self.log[tail..].join("\n    ")
            );
        }
    }
}

/// An offset near the data: inside, at or past the end, across page boundaries.
fn offset(rng: &mut Rng, len: u64) -> u64 {
    let p = page();
    match rng.below(10) {
        0 => len,
        1 => len + rng.below(3 * p),
        2 => (rng.below(6) * p).saturating_sub(rng.below(3)),
        3 if rng.chance(20) => [u64::MAX, MAX_LEN, MAX_LEN - 3][rng.below(3) as usize],
        _ => rng.below(len + p / 2 + 1),
    }
}

fn size(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => 0,
        1 => 1 + rng.below(64) as usize,
        2 => page() as usize + rng.below(200) as usize,
        3 => 2 * page() as usize + 7,
        _ => 1 + rng.below(300) as usize,
    }
}

fn seek_target(rng: &mut Rng) -> SeekFrom {
    let d = |rng: &mut Rng| rng.below(3 * page()) as i64 - page() as i64;
    match rng.below(7) {
        0 => SeekFrom::Start(rng.below(4 * page())),
        1 => SeekFrom::Start(u64::MAX),
        2 | 3 => SeekFrom::End(d(rng)),
        _ => SeekFrom::Current(d(rng)),
    }
}

fn run_case(dir: &Path, setup: &Setup, seed: u64) {
    let mut rng = Rng(seed);
    let mut rerun = Rerun {
        setup,
        seed,
        log: Vec::new(),
    };
    let p = page();
    let name = format!("ours-{seed:x}");
    let ref_path = dir.join(format!("ref-{seed:x}"));
    let n = rng.below(4 * p) as usize;
    let initial = rng.bytes(n);
    std::fs::write(dir.join(&name), &initial).unwrap();
    std::fs::write(&ref_path, &initial).unwrap();

    let mode = if setup.cow {
        MapMode::CopyOnWrite
    } else {
        MapMode::ReadWrite
    };
    let base = MapConfig::default().mode(mode);
    let whole_fs = MmapFs::new(dir, base.clone()).unwrap();
    let window_fs =
        MmapFs::new(dir, base.window(setup.window.map(|w| w * p)).max_windows(2)).unwrap();
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).append(setup.append);
    let mut ours: Vec<MappedFile> = if setup.two {
        vec![
            whole_fs.open_with(&name, &opts).unwrap(),
            window_fs.open_with(&name, &opts).unwrap(),
        ]
    } else {
        vec![window_fs.open_with(&name, &opts).unwrap()]
    };
    let mut reference = if setup.cow {
        Reference::Model {
            bytes: initial.clone(),
            cursor: 0,
        }
    } else {
        Reference::Std {
            handles: ours.iter().map(|_| opts.open(&ref_path).unwrap()).collect(),
            positioned: OpenOptions::new()
                .read(true)
                .write(true)
                .open(&ref_path)
                .unwrap(),
        }
    };
    let outside_ours = setup.outside.then(|| outside(dir, &name));
    let outside_ref = setup
        .outside
        .then(|| outside(dir, ref_path.file_name().unwrap().to_str().unwrap()));

    let ops = 20 + rng.below(60);
    for i in 0..ops {
        let cur_len = ours[0].len();
        if let (Some(o), Some(r)) = (&outside_ours, &outside_ref) {
            if rng.chance(15) {
                let real = r.metadata().unwrap().len();
                if rng.chance(60) {
                    let off = rng.below(real + p);
                    let n = size(&mut rng).max(1);
                    let data = rng.bytes(n);
                    rerun.log.push(format!(
                        "#{i} outside write_at({} bytes, {off})",
                        data.len()
                    ));
                    o.write_all_at(&data, off).unwrap();
                    r.write_all_at(&data, off).unwrap();
                } else {
                    let n = rng.below(real + 2 * p);
                    rerun.log.push(format!("#{i} outside set_len({n})"));
                    o.set_len(n).unwrap();
                    r.set_len(n).unwrap();
                    let known = ours[0].len();
                    if n < known {
                        // The documented limit: a read inside the length the process knows
                        // does not ask the kernel. Past the new end it reads zeros up to the end
                        // of that page, and faults past that page.
                        let page_end = n.div_ceil(p) * p;
                        if page_end > n && rng.chance(50) {
                            let off = n + rng.below(page_end.min(known) - n);
                            let k = rng.below(page_end.min(known) - off) + 1;
                            let mut buf = vec![1u8; k as usize];
                            rerun
                                .log
                                .push(format!("#{i} probe read_at({k}, {off}) after outside cut"));
                            assert_eq!(ours[0].read_at(&mut buf, off).unwrap(), k as usize);
                            assert!(buf.iter().all(|&b| b == 0), "zeros past an outside cut");
                        } else if known > page_end && rng.chance(10) {
                            let off = page_end + rng.below(known - page_end);
                            let mut buf = [0u8; 1];
                            rerun
                                .log
                                .push(format!("#{i} probe read_at(1, {off}) past the cut page"));
                            let e = ours[0].read_at(&mut buf, off).unwrap_err();
                            assert!(is_faulted(&e), "{e:?}");
                            for h in &ours {
                                assert!(is_faulted(&h.read_at(&mut buf, 0).unwrap_err()));
                            }
                            return; // the file is poisoned for every handle
                        }
                        // An operation that asks for the real length makes the handle see it.
                        let mut h = &ours[0];
                        let pos = h.stream_position().unwrap();
                        assert_eq!(h.seek(SeekFrom::End(0)).unwrap(), n);
                        h.seek(SeekFrom::Start(pos)).unwrap();
                    }
                }
                continue;
            }
        }
        let h = rng.below(ours.len() as u64) as usize;
        if setup.two && rng.chance(3) {
            // Create (truncate) the file again while the other handle keeps it open.
            rerun.log.push(format!("#{i} handle {h}: create"));
            let fs = if h == 0 { &whole_fs } else { &window_fs };
            ours[h] = fs.create(&name).unwrap();
            if let Reference::Std { handles, .. } = &mut reference {
                handles[h] = File::create(&ref_path).unwrap();
                handles[h] = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&ref_path)
                    .unwrap();
            }
            continue;
        }
        let mut f = &ours[h];
        let op = rng.below(14);
        let (desc, got, want) = match op {
            0 | 1 => {
                let off = offset(&mut rng, cur_len);
                let n = size(&mut rng);
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                let got = outcome(f.read_at(&mut a, off));
                let want = reference.read_at(h, &mut b, off);
                if let Ok(k) = got {
                    assert_eq!(a[..k as usize], b[..k as usize], "bytes of read_at");
                }
                (format!("read_at({n}, {off})"), got, want)
            }
            2 | 3 => {
                let n = size(&mut rng);
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                let got = outcome(f.read(&mut a));
                let want = reference.read(h, &mut b);
                if let Ok(k) = got {
                    assert_eq!(a[..k as usize], b[..k as usize], "bytes of read");
                }
                (format!("read({n})"), got, want)
            }
            4 => {
                let n = size(&mut rng);
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                let got = outcome(f.read_exact(&mut a).map(|()| 0u64));
                let want = reference.read_exact(h, &mut b);
                if got.is_ok() {
                    assert_eq!(a, b, "bytes of read_exact");
                }
                (format!("read_exact({n})"), got, want)
            }
            5 | 6 => {
                let off = offset(&mut rng, cur_len);
                let n = size(&mut rng);
                let data = rng.bytes(n);
                let got = outcome(f.write_at(&data, off));
                let want = reference.write_at(h, &data, off);
                (format!("write_at({} bytes, {off})", data.len()), got, want)
            }
            7 | 8 => {
                let n = size(&mut rng);
                let data = rng.bytes(n);
                let got = outcome(f.write(&data));
                let want = reference.write(h, &data);
                (format!("write({} bytes)", data.len()), got, want)
            }
            9 => {
                let n = size(&mut rng);
                let data = rng.bytes(n);
                let got = outcome(f.write_all(&data).map(|()| 0u64));
                let want = reference.write_all(h, &data);
                (format!("write_all({} bytes)", data.len()), got, want)
            }
            10 | 11 => {
                let pos = seek_target(&mut rng);
                let got = outcome(f.seek(pos));
                let want = reference.seek(h, pos);
                (format!("seek({pos:?})"), got, want)
            }
            // fsync costs milliseconds on a journalling filesystem: rare, to keep the suite fast.
            13 if rng.chance(4) => {
                let got = outcome(f.sync_all().map(|()| 0u64));
                let want = reference.sync();
                ("sync_all".to_string(), got, want)
            }
            _ => {
                let n = match rng.below(4) {
                    0 => 0,
                    1 => cur_len / 2,
                    _ => rng.below(6 * p),
                };
                let got = outcome(f.set_len(n).map(|()| 0u64));
                let want = reference.set_len(h, n);
                (format!("set_len({n})"), got, want)
            }
        };
        rerun
            .log
            .push(format!("#{i} handle {h}: {desc} -> {got:?}"));
        assert_eq!(got, want, "{desc} on handle {h}");
    }

    // Byte by byte: what every handle reads, and the files on disk.
    let want = reference.contents(&ref_path);
    for (h, f) in ours.iter().enumerate() {
        let mut f = f;
        assert_eq!(
            f.seek(SeekFrom::End(0)).unwrap(),
            want.len() as u64,
            "length seen by handle {h}"
        );
        let mut got = vec![0u8; want.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == want, "contents read through handle {h}");
        let mut past = [0u8; 8];
        assert_eq!(f.read_at(&mut past, want.len() as u64).unwrap(), 0);
    }
    let on_disk = std::fs::read(dir.join(&name)).unwrap();
    if setup.cow {
        assert!(
            on_disk == initial,
            "a copy-on-write handle never changes the file"
        );
    } else {
        assert!(on_disk == want, "contents on disk");
    }
    drop(ours);
    let _ = std::fs::remove_file(dir.join(&name));
    let _ = std::fs::remove_file(&ref_path);
}

fn cases() -> u64 {
    std::env::var("SEGPOOL_DIFF_CASES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("SEGPOOL_DIFF_CASES is a number of cases per setup")
        })
        .unwrap_or(32)
}

fn run_setup(index: usize) {
    let setup = &SETUPS[index];
    let dir = tempfile::tempdir().unwrap();
    if let Ok(seed) = std::env::var("SEGPOOL_DIFF_SEED") {
        let s = seed.trim_start_matches("0x");
        let seed = u64::from_str_radix(s, 16).expect("SEGPOOL_DIFF_SEED in hex");
        if seed & 0xF == index as u64 {
            run_case(dir.path(), setup, seed);
        }
        return;
    }
    let mut seeds = Rng(0x5E6_9001 ^ (index as u64) << 32);
    for _ in 0..cases() {
        // The setup's index is in the seed, so a printed seed names its setup too.
        let seed = (seeds.next() & !0xF) | index as u64;
        run_case(dir.path(), setup, seed);
    }
}

#[test]
fn random_whole() {
    run_setup(0);
}
#[test]
fn random_windowed() {
    run_setup(1);
}
#[test]
fn random_two_handles() {
    run_setup(2);
}
#[test]
fn random_two_handles_one_windowed() {
    run_setup(3);
}
#[test]
fn random_writer_outside() {
    run_setup(4);
}
#[test]
fn random_writer_outside_windowed() {
    run_setup(5);
}
#[test]
fn random_append_with_writer_outside() {
    run_setup(6);
}
#[test]
fn random_copy_on_write() {
    run_setup(7);
}
