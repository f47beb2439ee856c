use super::*;
use std::sync::Arc;

#[test]
fn fields_added_later_are_left_out_when_empty_so_old_hashes_verify() {
    let old = record(1, "t", "cloud");
    let json = serde_json::to_value(&old).unwrap();
    for key in ["host", "redacted", "signals", "request_id"] {
        assert!(json.get(key).is_none(), "{key} must not be serialised when empty");
    }
    let mut new = old.clone();
    new.host = "api.openai.com".into();
    new.redacted = BTreeMap::from([("email".to_string(), 1)]);
    new.signals = Some(serde_json::json!({"task": "summarization"}));
    new.request_id = "req-1".into();
    let back: AuditRecord = serde_json::from_value(serde_json::to_value(&new).unwrap()).unwrap();
    assert_eq!(back, new);
    assert_ne!(chain_hash(1, "", &old).unwrap(), chain_hash(1, "", &new).unwrap());
}

fn record(time: u64, team: &str, decision: &str) -> AuditRecord {
    AuditRecord {
        time_unix_ms: time,
        team: team.to_string(),
        user: "alice".to_string(),
        client_addr: "10.0.0.7:51234".to_string(),
        ingress: "gateway".to_string(),
        api: "openai.chat_completions".to_string(),
        model_requested: "gpt-4o".to_string(),
        model_used: "gpt-4o".to_string(),
        provider: "openai".to_string(),
        decision: decision.to_string(),
        rule: "default".to_string(),
        reason: "no findings".to_string(),
        findings: BTreeMap::from([("email".to_string(), 2), ("iban".to_string(), 1)]),
        prompt_sha256: "ab".repeat(32),
        status: 200,
        latency_us: Latencies { inspect: 120, upstream: 90_000, total: 91_000 },
        ..AuditRecord::default()
    }
}

/// Opens a fresh log in a temp dir with `n` records (teams alternate red/blue).
fn log_with(n: u64) -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    for i in 1..=n {
        let team = if i % 2 == 0 { "blue" } else { "red" };
        assert_eq!(log.append(record(1_000 + i, team, "cloud")).unwrap(), i);
    }
    (dir, log)
}

fn raw(log: &AuditLog, seq: u64) -> Vec<u8> {
    log.db.get(seq.to_be_bytes()).unwrap().unwrap().to_vec()
}

fn bad(log: &AuditLog) -> BadRecord {
    log.verify().unwrap().first_bad.expect("tampering not detected")
}

#[test]
fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 1..=3 {
            log.append(record(i, "red", "cloud")).unwrap();
        }
        log.flush().unwrap();
    }
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log.append(record(4, "red", "local")).unwrap(), 4);
    let all = log.query(&AuditFilter::default()).unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(all[0].prev_hash, GENESIS_HASH);
    assert_eq!(all[3].prev_hash, all[2].hash);
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 4, first_bad: None });
}

#[test]
fn empty_log_verifies() {
    let (_dir, log) = log_with(0);
    assert_eq!(log.len(), 0);
    assert!(log.is_empty());
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 0, first_bad: None });
}

#[test]
fn clean_log_verifies_and_hash_is_recomputable_from_stored_bytes() {
    let (_dir, log) = log_with(5);
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 5, first_bad: None });
    // The construction documented for outside auditors: cut the hash member
    // out of the stored bytes and hash prev_hash + "\n" + the rest.
    let mut prev = GENESIS_HASH.to_string();
    for seq in 1..=5 {
        let text = String::from_utf8(raw(&log, seq)).unwrap();
        let stored: StoredRecord = serde_json::from_str(&text).unwrap();
        assert!(text.starts_with(&format!("{{\"seq\":{seq},\"prev_hash\":\"{prev}\",\"hash\":")));
        let unsealed = text.replace(&format!("\"hash\":\"{}\",", stored.hash), "");
        let mut hasher = Sha256::new();
        hasher.update(prev.as_bytes());
        hasher.update(b"\n");
        hasher.update(unsealed.as_bytes());
        assert_eq!(hex::encode(hasher.finalize()), stored.hash);
        prev = stored.hash;
    }
}

#[test]
fn sealed_bytes_are_the_canonical_stored_form() {
    let mut with_extras = record(7, "red", "cloud");
    with_extras.host = "api.openai.com".into();
    with_extras.redacted = BTreeMap::from([("email".to_string(), 1)]);
    with_extras.signals = Some(serde_json::json!({"task": "summarization", "turns": 3}));
    for (seq, prev, rec) in [
        (1, GENESIS_HASH, record(1, "red", "cloud")),
        (42, "ab".repeat(32).as_str(), with_extras),
        (u64::MAX, "not hex \"quoted\"", AuditRecord::default()),
    ] {
        let mut out = Vec::new();
        let hash = seal_into(seq, prev, &rec, &mut out).unwrap();
        let expected =
            StoredRecord { seq, prev_hash: prev.to_string(), hash: chain_hash(seq, prev, &rec).unwrap(), record: rec };
        assert_eq!(hash, expected.hash);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&expected).unwrap());
    }
}

/// A log whose records 1-3 are one block and 4-8 another, as the
/// background writer stores them.
fn log_with_blocks() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let batch = |from: u64, to: u64| {
        (from..=to).map(|i| record(1_000 + i, if i % 2 == 0 { "blue" } else { "red" }, "cloud")).collect::<Vec<_>>()
    };
    assert_eq!(log.append_batch(batch(1, 3)).unwrap(), 3);
    assert_eq!(log.append_batch(batch(4, 8)).unwrap(), 8);
    (dir, log)
}

#[test]
fn a_batch_is_one_block_that_reads_verifies_and_continues() {
    let (dir, log) = log_with_blocks();
    assert_eq!(log.db.len(), 2, "two batches, two sled entries");
    assert_eq!(log.len(), 8);
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 8, first_bad: None });
    let all = log.query(&AuditFilter::default()).unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    // A limit that ends inside a block keeps the newest matches.
    let blue = log.query(&AuditFilter { team: Some("blue".into()), limit: Some(3), ..AuditFilter::default() }).unwrap();
    assert_eq!(blue.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 6, 8]);
    drop(log);
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.len(), 8);
    assert_eq!(log.append(record(2_000, "red", "local")).unwrap(), 9);
    assert!(log.verify().unwrap().first_bad.is_none());
}

#[test]
fn edited_record_inside_a_block_is_named() {
    let (_dir, log) = log_with_blocks();
    let block = String::from_utf8(raw(&log, 4)).unwrap();
    let lines: Vec<&str> = block.split('\n').collect();
    assert_eq!(lines.len(), 5);
    let edited = lines[2].replace("\"team\":\"blue\"", "\"team\":\"red\"");
    assert_ne!(edited, lines[2]);
    let block = [lines[0], lines[1], &edited, lines[3], lines[4]].join("\n");
    log.db.insert(4u64.to_be_bytes(), block.as_bytes()).unwrap();
    assert_eq!(bad(&log), BadRecord { seq: 6, reason: "hash mismatch (record edited)".to_string() });
}

#[test]
fn record_removed_from_inside_a_block_is_named() {
    let (_dir, log) = log_with_blocks();
    let block = String::from_utf8(raw(&log, 4)).unwrap();
    let mut lines: Vec<&str> = block.split('\n').collect();
    lines.remove(1); // record 5
    log.db.insert(4u64.to_be_bytes(), lines.join("\n").as_bytes()).unwrap();
    let report = log.verify().unwrap();
    assert_eq!(report.checked, 4);
    assert_eq!(
        report.first_bad,
        Some(BadRecord { seq: 6, reason: "sequence gap: expected 5, found 6 (record removed)".to_string() })
    );
}

#[test]
fn records_cut_from_the_end_of_the_last_block_are_detected_via_head() {
    let (_dir, log) = log_with_blocks();
    let block = String::from_utf8(raw(&log, 4)).unwrap();
    let kept: Vec<&str> = block.split('\n').take(3).collect(); // 4, 5, 6
    log.db.insert(4u64.to_be_bytes(), kept.join("\n").as_bytes()).unwrap();
    let report = log.verify().unwrap();
    assert_eq!(report.checked, 6);
    assert_eq!(report.first_bad.unwrap().seq, 7);
}

#[test]
fn edited_record_is_named() {
    let (_dir, log) = log_with(5);
    let edited = String::from_utf8(raw(&log, 3)).unwrap().replace("\"team\":\"red\"", "\"team\":\"blue\"");
    log.db.insert(3u64.to_be_bytes(), edited.as_bytes()).unwrap();
    assert_eq!(bad(&log), BadRecord { seq: 3, reason: "hash mismatch (record edited)".to_string() });
}

#[test]
fn added_member_with_intact_hash_is_named() {
    let (_dir, log) = log_with(3);
    let edited = String::from_utf8(raw(&log, 2)).unwrap().replacen('{', "{\"note\":\"x\",", 1);
    log.db.insert(2u64.to_be_bytes(), edited.as_bytes()).unwrap();
    let found = bad(&log);
    assert_eq!(found.seq, 2);
    assert!(found.reason.contains("canonical"), "{}", found.reason);
}

#[test]
fn garbage_record_is_unreadable() {
    let (_dir, log) = log_with(3);
    log.db.insert(2u64.to_be_bytes(), &b"not json"[..]).unwrap();
    assert_eq!(bad(&log), BadRecord { seq: 2, reason: "record unreadable".to_string() });
}

#[test]
fn removed_middle_record_is_named() {
    let (_dir, log) = log_with(5);
    log.db.remove(3u64.to_be_bytes()).unwrap();
    let report = log.verify().unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(
        report.first_bad,
        Some(BadRecord { seq: 4, reason: "sequence gap: expected 3, found 4 (record removed)".to_string() })
    );
}

#[test]
fn renumbered_record_breaks_prev_hash() {
    // Record 3 removed and 4 moved into its place with its seq rewritten:
    // its stored prev_hash still names record 3.
    let (_dir, log) = log_with(4);
    let moved = String::from_utf8(raw(&log, 4)).unwrap().replacen("\"seq\":4", "\"seq\":3", 1);
    log.db.remove(4u64.to_be_bytes()).unwrap();
    log.db.insert(3u64.to_be_bytes(), moved.as_bytes()).unwrap();
    assert_eq!(
        bad(&log),
        BadRecord { seq: 3, reason: "prev_hash does not match record 2 (removed or reordered)".to_string() }
    );
}

#[test]
fn swapped_records_are_named() {
    let (_dir, log) = log_with(5);
    let (two, four) = (raw(&log, 2), raw(&log, 4));
    log.db.insert(2u64.to_be_bytes(), four).unwrap();
    log.db.insert(4u64.to_be_bytes(), two).unwrap();
    let found = bad(&log);
    assert_eq!(found.seq, 2);
    assert_eq!(found.reason, "key 2 holds record 4 (records reordered or moved)");
}

#[test]
fn removed_last_record_is_detected_via_head() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 1..=5 {
            log.append(record(i, "red", "cloud")).unwrap();
        }
        log.db.remove(5u64.to_be_bytes()).unwrap();
        let report = log.verify().unwrap();
        assert_eq!(report.checked, 4);
        let found = report.first_bad.expect("truncation not detected");
        assert_eq!(found.seq, 5);
        assert!(found.reason.contains("removed from the end"), "{}", found.reason);
        log.flush().unwrap();
    }
    // After a restart the chain continues from the head, so the hole stays
    // visible instead of seq 5 being silently reused.
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.append(record(6, "red", "cloud")).unwrap(), 6);
    assert_eq!(
        bad(&log),
        BadRecord { seq: 6, reason: "sequence gap: expected 5, found 6 (record removed)".to_string() }
    );
}

#[test]
fn replaced_head_is_detected() {
    let (_dir, log) = log_with(3);
    let fake = serde_json::to_vec(&Head { seq: 3, hash: "cd".repeat(32) }).unwrap();
    log.meta.insert(HEAD_KEY, fake).unwrap();
    assert_eq!(
        bad(&log),
        BadRecord { seq: 3, reason: "head hash does not match record 3 (head replaced)".to_string() }
    );
    log.meta.remove(HEAD_KEY).unwrap();
    assert!(bad(&log).reason.contains("head entry missing"));
}

#[test]
fn query_filters_and_keeps_newest_within_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let rows = [
        (100, "red", "cloud"),
        (200, "blue", "block"),
        (300, "red", "local"),
        (400, "red", "cloud"),
        (500, "blue", "cloud"),
        (600, "red", "cloud"),
    ];
    for (time, team, decision) in rows {
        log.append(record(time, team, decision)).unwrap();
    }
    let seqs = |filter: AuditFilter| -> Vec<u64> { log.query(&filter).unwrap().iter().map(|r| r.seq).collect() };
    assert_eq!(seqs(AuditFilter::default()), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(AuditFilter { since_ms: Some(200), until_ms: Some(500), ..Default::default() }), [2, 3, 4]);
    assert_eq!(
        seqs(AuditFilter { team: Some("red".to_string()), decision: Some("cloud".to_string()), ..Default::default() }),
        [1, 4, 6]
    );
    assert_eq!(seqs(AuditFilter { team: Some("red".to_string()), limit: Some(2), ..Default::default() }), [4, 6]);
    assert!(seqs(AuditFilter { limit: Some(0), ..Default::default() }).is_empty());
    assert!(seqs(AuditFilter { team: Some("green".to_string()), ..Default::default() }).is_empty());
    let first = &log.query(&AuditFilter::default()).unwrap()[0];
    assert_eq!(first.record, record(100, "red", "cloud"));
}

#[test]
fn concurrent_appends_form_one_chain() {
    let (_dir, log) = log_with(0);
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..200).map(|i| log.append(record(t * 1_000 + i, "red", "cloud")).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1600).collect::<Vec<_>>());
    assert_eq!(log.len(), 1600);
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 1600, first_bad: None });
}

#[test]
fn check_writable_passes_when_healthy_and_fails_closed_after_a_write_error() {
    let (_dir, log) = log_with(1);
    log.check_writable().unwrap();
    assert_eq!(log.probe.len(), 1);
    // What a failed append or flush leaves behind.
    log.broken.store(true, Ordering::SeqCst);
    assert!(matches!(log.check_writable(), Err(AuditError::NotWritable)));
}

#[test]
fn second_open_of_same_dir_reports_locked() {
    // sled locks the db file with flock, which is per open file description,
    // so a second open in the same process is refused just like one from
    // another process.
    let dir = tempfile::tempdir().unwrap();
    let _first = AuditLog::open(dir.path()).unwrap();
    match AuditLog::open(dir.path()) {
        Err(err @ AuditError::Locked { .. }) => {
            assert!(err.to_string().contains("is `sluice serve` running?"));
        }
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

#[test]
fn lock_errors_are_recognised() {
    let dir = Path::new("/var/lib/sluice/audit");
    let would_block = sled::Error::Io(io::Error::from(io::ErrorKind::WouldBlock));
    assert!(matches!(open_error(would_block, dir), AuditError::Locked { .. }));
    let sled_message =
        sled::Error::Io(io::Error::other("could not acquire lock on \"/x/db\": Os { code: 11, kind: WouldBlock }"));
    assert!(matches!(open_error(sled_message, dir), AuditError::Locked { .. }));
    let denied = sled::Error::Io(io::Error::from(io::ErrorKind::PermissionDenied));
    assert!(matches!(open_error(denied, dir), AuditError::Open { .. }));
}

/// Whatever the umask and whether or not the proxy (and with it the CA,
/// which used to create `data/` 0700) is enabled, the store is private.
#[cfg(unix)]
#[test]
fn the_store_is_private_when_created_and_when_found_loose() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let files_under = |dir: &Path| {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    found.push(e.path());
                }
            }
        }
        found
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("audit");
    {
        let log = AuditLog::open(&dir).unwrap();
        log.append(record(1, "red", "cloud")).unwrap();
        log.flush().unwrap();
    }
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&dir), 0o700);
    let files = files_under(&dir);
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // A store left readable by an older sluice is tightened on open.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let log = AuditLog::open(&dir).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(mode(&dir), 0o700);
    for f in files_under(&dir) {
        assert_eq!(mode(&f) & 0o077, 0, "{}", f.display());
    }
}

/// Blocks `first..=last` continuing `log`'s chain, sealed as the writer
/// would, without storing them: what a write-ahead log holds that sled
/// lost in a crash.
fn sealed_after(log: &AuditLog, first: u64, last: u64) -> Vec<(u64, Vec<u8>)> {
    let state = log.state.lock().unwrap();
    assert_eq!(state.next_seq, first);
    let mut prev = state.last_hash.clone();
    (first..=last)
        .map(|seq| {
            let mut block = Vec::new();
            prev = seal_into(seq, &prev, &record(seq, "red", "cloud"), &mut block).unwrap();
            (seq, block)
        })
        .collect()
}

fn segments_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A log with records 1..=3 in sled and 4..=6 only in its WAL, one frame
/// each; returns the WAL's blocks.
fn log_with_wal_tail(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let log = AuditLog::open(dir).unwrap();
    for i in 1..=3 {
        log.append(record(i, "red", "cloud")).unwrap();
    }
    log.flush().unwrap();
    let blocks = sealed_after(&log, 4, 6);
    let mut wal = wal::Wal::open(&log.wal_dir()).unwrap();
    for block in &blocks {
        wal.append(std::slice::from_ref(block)).unwrap();
    }
    blocks
}

#[test]
fn records_in_the_wal_past_sleds_last_are_replayed_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = log_with_wal_tail(dir.path());
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.len(), 6);
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 6, first_bad: None });
    for (seq, block) in &blocks {
        assert_eq!(&raw(&log, *seq), block, "record {seq} is stored exactly as it was sealed");
    }
    assert!(segments_in(&log.wal_dir()).is_empty(), "replayed segments are deleted");
    // The chain goes on after the recovered records.
    assert_eq!(log.append(record(7, "blue", "local")).unwrap(), 7);
    assert!(log.verify().unwrap().first_bad.is_none());
}

#[test]
fn a_torn_wal_tail_is_discarded_and_its_seq_reused() {
    let dir = tempfile::tempdir().unwrap();
    log_with_wal_tail(dir.path());
    let wal_dir = dir.path().join("wal");
    let segment = wal_dir.join(&segments_in(&wal_dir)[0]);
    let bytes = std::fs::read(&segment).unwrap();
    // The last frame's fdatasync never returned: only part of it is there.
    std::fs::write(&segment, &bytes[..bytes.len() - 7]).unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.len(), 5, "records 1-3 from sled, 4-5 from the WAL, 6 torn");
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 5, first_bad: None });
    assert_eq!(log.append(record(99, "blue", "local")).unwrap(), 6);
    assert!(log.verify().unwrap().first_bad.is_none());
}

#[test]
fn wal_records_sled_already_holds_are_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 1..=2 {
            log.append(record(i, "red", "cloud")).unwrap();
        }
        // One group of three records in one block, 3..=5, through the WAL
        // and into sled, as the strict writer stores it.
        let mut wal = wal::Wal::open(&log.wal_dir()).unwrap();
        let records = (3..=5).map(|i| record(i, "red", "cloud")).collect();
        log.append_group(records, 512, Some(&mut wal), |durable| assert!(durable)).unwrap();
        log.flush().unwrap();
    }
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 5, first_bad: None });
    assert!(segments_in(&log.wal_dir()).is_empty());
}

#[test]
fn a_wal_block_that_overlaps_sleds_end_adds_only_the_new_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(record(1, "red", "cloud")).unwrap();
        // The WAL holds 2..=4 as one block; sled got 2 and 3 on their own
        // (blocks are never split in practice, but the replay must cope).
        let blocks = sealed_after(&log, 2, 4);
        let joined: Vec<u8> = blocks.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>().join(&b'\n');
        wal::Wal::open(&log.wal_dir()).unwrap().append(&[(2, joined)]).unwrap();
        for (seq, block) in &blocks[..2] {
            log.db.insert(seq.to_be_bytes(), block.clone()).unwrap();
        }
        log.flush().unwrap();
    }
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 4, first_bad: None });
}

#[test]
fn a_wal_that_does_not_continue_the_chain_is_set_aside_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 1..=3 {
            log.append(record(i, "red", "cloud")).unwrap();
        }
        // Sealed after record 2, not 3: its prev_hash names the wrong record.
        let mut block = Vec::new();
        let after_two = log.query(&AuditFilter::default()).unwrap()[1].hash.clone();
        seal_into(4, &after_two, &record(4, "red", "cloud"), &mut block).unwrap();
        wal::Wal::open(&log.wal_dir()).unwrap().append(&[(4, block)]).unwrap();
        log.flush().unwrap();
    }
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.verify().unwrap().first_bad.is_none());
    assert_eq!(segments_in(&log.wal_dir()), ["00000000000000000004.seg.rejected"]);
    // It stays out of later opens.
    drop(log);
    assert_eq!(AuditLog::open(dir.path()).unwrap().len(), 3);
}

#[test]
fn a_log_without_a_wal_directory_opens_unchanged() {
    let (dir, log) = log_with(4);
    drop(log);
    let log = AuditLog::open(dir.path()).unwrap();
    assert!(!log.wal_dir().exists());
    assert_eq!(log.verify().unwrap(), VerifyReport { checked: 4, first_bad: None });
}
