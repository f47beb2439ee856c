//! Signed checkpoints, retention and the keyed prompt digest, end to end
//! (issue 16, points 3 to 5): `sluice serve` signs checkpoints of the chain
//! head into a file outside its data directory; an attacker with write
//! access to the sled files then rewrites the chain (recomputing every hash
//! and the head, as the module docs allow anyone to) or cuts its tail, and
//! removes the checkpoints stored beside the log. The plain chain walk
//! cannot tell; `sluice audit verify --checkpoints FILE --key VERIFIER`
//! can. Retention removes old records behind a signed cut that `verify`
//! accepts, and rejects once it is missing or forged.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice::audit::note::{Checkpoint, Signer, Verifier};
use sluice::audit::{AuditLog, AuditRecord, StoredRecord};
use support::*;

/// A checkpoint every 2 records (and one at shutdown), into a file next to
/// the config, outside `data/audit`.
const CHECKPOINTS: &str =
    "checkpoint_every_records: 2, checkpoint_every_secs: 0, checkpoint_origin: sluice/test, checkpoints_file: checkpoints.txt";

fn setup(audit: &str) -> Setup {
    Setup { audit: audit.to_string(), ..Setup::default() }
}

fn checkpoints_file(sluice: &SluiceProc) -> PathBuf {
    sluice.dir.path().join("checkpoints.txt")
}

/// `prompts` chat requests, one after another; each leaves one record.
async fn traffic(sluice: &SluiceProc, prompts: &[&str]) {
    let client = reqwest::Client::new();
    for prompt in prompts {
        let resp =
            client.post(sluice.url("/v1/chat/completions")).json(&chat_body(prompt, false)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", sluice.log());
        // Lets the writer store each record as a block of its own, so the
        // tail can be cut by whole blocks (not needed for correctness).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves `n` requests and stops: the log then ends with a checkpoint of its head.
async fn served_log(n: usize) -> SluiceProc {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, setup(CHECKPOINTS)).await;
    let prompts: Vec<String> = (0..n).map(|i| format!("Name a river, number {i}")).collect();
    traffic(&sluice, &prompts.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(sluice.stop().success(), "unclean exit:\n{}", sluice.log());
    sluice
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `sluice --config CONFIG audit verify <extra>` (the config names the
/// audit directory and the checkpoint origin).
fn verify(sluice: &SluiceProc, extra: &[&str]) -> Output {
    let mut args = vec!["--config", sluice.config.to_str().unwrap(), "audit", "verify"];
    args.extend_from_slice(extra);
    cli(&args, None)
}

/// The verifier key, as an auditor saves it while the log is known good.
fn public_key(sluice: &SluiceProc) -> String {
    let out = cli(&["--config", sluice.config.to_str().unwrap(), "audit", "checkpoint", "--public-key"], None);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The hash the module docs define: SHA-256 of `prev_hash`, a newline and
/// the stored JSON without its `hash` member.
fn seal(record: &StoredRecord) -> String {
    let placeholder = "0".repeat(64);
    let unsealed = StoredRecord { hash: placeholder.clone(), ..record.clone() };
    let json = serde_json::to_string(&unsealed).unwrap().replacen(&format!("\"hash\":\"{placeholder}\","), "", 1);
    let mut h = Sha256::new();
    h.update(record.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(json.as_bytes());
    hex::encode(h.finalize())
}

fn blocks(db: &sled::Db) -> Vec<(sled::IVec, Vec<StoredRecord>)> {
    db.iter()
        .map(|entry| {
            let (key, value) = entry.unwrap();
            let records = value.split(|&b| b == b'\n').map(|line| serde_json::from_slice(line).unwrap()).collect();
            (key, records)
        })
        .collect()
}

fn join(records: &[StoredRecord]) -> Vec<u8> {
    records.iter().map(|r| serde_json::to_string(r).unwrap()).collect::<Vec<_>>().join("\n").into_bytes()
}

fn set_head(db: &sled::Db, seq: u64, hash: &str) {
    let head = format!("{{\"seq\":{seq},\"hash\":\"{hash}\"}}");
    db.open_tree("meta").unwrap().insert("head", head.as_bytes()).unwrap();
}

/// The attacker: edits record `seq` and re-seals the chain from there on
/// (every later `prev_hash` and `hash`, then the head), straight in sled.
fn rewrite_record(dir: &Path, seq: u64, edit: impl Fn(&mut StoredRecord)) {
    let db = sled::open(dir).unwrap();
    let mut prev: Option<String> = None;
    let mut head = None;
    for (key, mut records) in blocks(&db) {
        for record in &mut records {
            if record.seq == seq {
                edit(record);
            }
            if record.seq >= seq {
                if let Some(prev) = &prev {
                    record.prev_hash = prev.clone();
                }
                record.hash = seal(record);
            }
            prev = Some(record.hash.clone());
            head = Some((record.seq, record.hash.clone()));
        }
        db.insert(key, join(&records)).unwrap();
    }
    let (seq, hash) = head.expect("records");
    set_head(&db, seq, &hash);
    db.flush().unwrap();
}

/// The attacker: removes the last block and points the head at the record
/// before it. Returns the new last seq.
fn cut_tail(dir: &Path) -> u64 {
    let db = sled::open(dir).unwrap();
    let (key, _) = db.last().unwrap().expect("records");
    db.remove(key).unwrap();
    let (_, records) = blocks(&db).pop().expect("more than one block");
    let last = records.last().unwrap();
    set_head(&db, last.seq, &last.hash);
    db.flush().unwrap();
    last.seq
}

/// The attacker: removes the checkpoints stored beside the log.
fn drop_stored_checkpoints(dir: &Path) {
    let db = sled::open(dir).unwrap();
    assert!(db.drop_tree("checkpoints").unwrap(), "there were stored checkpoints");
    db.flush().unwrap();
}

fn records(dir: &Path) -> Vec<Value> {
    let out = cli(&["audit", "query", "--json", "--dir"], Some(dir));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn a_served_log_verifies_against_its_signed_checkpoints() {
    let sluice = served_log(5).await;
    let dir = sluice.audit_dir();
    #[cfg(unix)]
    for key in ["checkpoint.key", "prompt.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }

    // The latest checkpoint names the head, signed by the key to pin.
    let key = public_key(&sluice);
    assert!(key.starts_with("sluice/test+"), "{key}");
    let verifier = Verifier::parse(&key).unwrap();
    let out = cli(&["audit", "checkpoint", "--dir"], Some(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let note = String::from_utf8(out.stdout).unwrap();
    let latest = Checkpoint::parse(verifier.open(&note).expect("the printed checkpoint verifies")).unwrap();
    let all = records(&dir);
    assert_eq!(all.len(), 5);
    assert_eq!((latest.size, latest.hash_hex()), (5, all[4]["hash"].as_str().unwrap().to_string()));
    assert!(std::fs::read_to_string(checkpoints_file(&sluice)).unwrap().contains(&note), "the file has it too");

    let out = verify(&sluice, &["--checkpoints", checkpoints_file(&sluice).to_str().unwrap(), "--key", key.as_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit log OK: 5 record(s), hash chain intact"), "{}", text(&out));
    assert!(text(&out).contains("signed checkpoint(s) match the log (newest: record 5"), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "a pinned key needs no warning: {}", text(&out));

    // Without --key the key in the data directory is used, with a warning.
    let out = verify(&sluice, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Pin the key"), "{}", text(&out));

    // Another key does not vouch for these checkpoints.
    let other = Signer::new("sluice/test", &[42u8; 32]).unwrap().verifier().to_string();
    let out = verify(&sluice, &["--checkpoints", checkpoints_file(&sluice).to_str().unwrap(), "--key", other.as_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not signed by key sluice/test+"), "{}", text(&out));
}

#[tokio::test]
async fn new_records_carry_a_keyed_prompt_digest() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, setup("")).await;
    traffic(&sluice, &["Name a river", "Name a river", "Name a lake"]).await;
    let all = sluice.audit_records();
    let hmacs: Vec<&str> = all.iter().map(|r| r["prompt_hmac"].as_str().unwrap()).collect();
    assert!(hmacs.iter().all(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())), "{hmacs:?}");
    assert_eq!(hmacs[0], hmacs[1], "equal prompts correlate");
    assert_ne!(hmacs[1], hmacs[2]);
    assert!(all.iter().all(|r| r["prompt_sha256"] == ""), "no unkeyed digest: {all:?}");

    // Another deployment (another key) gives another digest for the same prompt.
    let fake = FakeProvider::start().await;
    let mut other = SluiceProc::start(&fake, setup("")).await;
    traffic(&other, &["Name a river"]).await;
    assert_ne!(other.audit_records()[0]["prompt_hmac"], hmacs[0]);
}

#[tokio::test]
async fn a_rewritten_chain_passes_the_chain_walk_but_not_the_checkpoints() {
    let sluice = served_log(6).await;
    let dir = sluice.audit_dir();
    let key = public_key(&sluice);
    let file = checkpoints_file(&sluice);
    let file = file.to_str().unwrap();
    assert_ne!(records(&dir)[1]["decision"], "local");

    // Record 2 becomes a local decision; the chain and head are re-sealed.
    rewrite_record(&dir, 2, |r| r.record.decision = "local".into());
    assert_eq!(records(&dir)[1]["decision"], "local");
    // The checkpoints stored beside the log still catch it...
    let out = verify(&sluice, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("audit log OK: 6 record(s), hash chain intact"), "the chain itself is whole");
    assert!(text(&out).contains("REWRITTEN: record"), "{}", text(&out));

    // ... until the attacker removes them too: then the walk alone passes.
    drop_stored_checkpoints(&dir);
    let out = verify(&sluice, &[]);
    assert!(out.status.success(), "plain verify cannot see a re-sealed chain: {}", text(&out));

    // The checkpoints kept outside the data directory catch it.
    for extra in [vec!["--checkpoints", file, "--key", key.as_str()], vec!["--checkpoints", file]] {
        let out = verify(&sluice, &extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", text(&out));
        let said = text(&out);
        assert!(said.contains("audit log TAMPERED: REWRITTEN: record"), "{said}");
        assert!(said.contains("the chain was rewritten"), "{said}");
        // No checkpoint precedes record 2 (the first comes after 2 records),
        // so the rewrite is bounded by the first one that disagrees.
        assert!(said.contains("the rewrite lies in records 1..="), "{said}");
        assert!(said.contains("checkpoints FAILED:"), "{said}");
    }
}

#[tokio::test]
async fn a_truncated_tail_is_caught_by_the_checkpoints() {
    let sluice = served_log(6).await;
    let dir = sluice.audit_dir();
    let key = public_key(&sluice);
    let file = checkpoints_file(&sluice);

    let last = cut_tail(&dir);
    assert!(last < 6);
    drop_stored_checkpoints(&dir);
    let out = verify(&sluice, &[]);
    assert!(out.status.success(), "the head was rewritten to match: {}", text(&out));

    let out = verify(&sluice, &["--checkpoints", file.to_str().unwrap(), "--key", key.as_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("TRUNCATED: the log ends at record {last} but the signed checkpoint")), "{said}");
    assert!(said.contains("names record 6: records were removed from the end"), "{said}");
}

#[tokio::test]
async fn retention_removes_old_blocks_behind_a_signed_cut() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, setup(&format!("{CHECKPOINTS}, retention_days: 7"))).await;
    assert!(sluice.stop().success(), "{}", sluice.log());
    let dir = sluice.audit_dir();
    let file = checkpoints_file(&sluice);

    // Five records of a month ago, each its own block, written as sluice
    // would have written them then.
    let month_ago = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 - 30 * 86_400_000;
    {
        let log = AuditLog::open(&dir).unwrap();
        for i in 0..5 {
            let record = AuditRecord {
                time_unix_ms: month_ago + i,
                team: "default".into(),
                decision: "cloud".into(),
                ..AuditRecord::default()
            };
            log.append(record).unwrap();
        }
        log.flush().unwrap();
    }

    // Retention runs at start: every old block but the newest goes.
    sluice.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&file).unwrap_or_default().contains("retention-cut") {
        assert!(Instant::now() < deadline, "no retention cut:\n{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    traffic(&sluice, &["Name a river", "Name a mountain", "Name a lake"]).await;
    assert!(sluice.stop().success(), "{}", sluice.log());
    let left = records(&dir);
    let seqs: Vec<u64> = left.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [5, 6, 7, 8], "records 1..4 removed, the newest old block kept");

    let key = public_key(&sluice);
    let text_of_file = std::fs::read_to_string(&file).unwrap();
    let out = verify(&sluice, &["--checkpoints", file.to_str().unwrap(), "--key", key.as_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("records 1..4 were removed by retention;"), "{}", text(&out));
    let out = verify(&sluice, &["--key", key.as_str()]);
    assert!(out.status.success(), "the stored cut proves it too: {}", text(&out));

    // The attacker removes the stored checkpoints: with none left at all the
    // front is only warned about (a log from before checkpoints looks alike)...
    drop_stored_checkpoints(&dir);
    let out = verify(&sluice, &["--key", key.as_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("warning: the log starts at record 5"), "{}", text(&out));

    // ... but the checkpoints file without its cut fails.
    let notes = sluice::audit::note::split_notes(&text_of_file);
    let cut = notes.iter().map(|n| n.note.clone().unwrap()).find(|n| n.contains("retention-cut")).unwrap();
    let without_cut = dir.parent().unwrap().join("without-cut.txt");
    std::fs::write(&without_cut, text_of_file.replace(&cut, "")).unwrap();
    let out = verify(&sluice, &["--checkpoints", without_cut.to_str().unwrap(), "--key", key.as_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FRONT UNPROVEN: the log starts at record 5"), "{}", text(&out));

    // And so does a cut forged with another key: right seq and hash, wrong signer.
    let first_prev = left[0]["prev_hash"].as_str().unwrap();
    let forged_cut = Checkpoint::new("sluice/test", 4, first_prev, 0, true).unwrap();
    let forged = Signer::new("sluice/test", &[9u8; 32]).unwrap().sign_checkpoint(&forged_cut);
    let forged_file = dir.parent().unwrap().join("forged-cut.txt");
    std::fs::write(&forged_file, text_of_file.replace(&cut, &forged)).unwrap();
    let out = verify(&sluice, &["--checkpoints", forged_file.to_str().unwrap(), "--key", key.as_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not signed by key sluice/test+"), "{}", text(&out));
    assert!(text(&out).contains("FRONT UNPROVEN"), "{}", text(&out));
}
