//! Checking the log against signed checkpoints: what `sluice audit verify`
//! adds to the chain walk.
//!
//! The chain alone cannot tell a rewritten log from the original: whoever
//! can write the store can recompute every hash and the head. A checkpoint
//! signed when the record was written can: for each one whose signature
//! verifies,
//!
//! - a checkpoint of record N, with N in the log, must have N's exact hash
//!   (otherwise the chain was rewritten);
//! - a checkpoint of a record after the log's last one means records were
//!   removed from the end (tail truncated), even if the head was rewritten;
//! - a checkpoint of record `first − 1` must have the hash the first
//!   record's `prev_hash` names: that proves the records before it were
//!   removed by retention (which signs such a cut before removing).
//!
//! A log whose first record is not record 1 needs that last proof; without
//! it the front is reported as unproven, a failure when any checkpoint was
//! found, and only a warning when there are none at all (a log from before
//! checkpoints, where there is nothing to check against).
//!
//! Checkpoints are only as strong as the key they are checked with: the
//! key in the audit directory can be replaced by whoever rewrites the log,
//! so auditors pin the verifier key (`--key`) and keep the checkpoints file
//! or the exported copies where the log's writers cannot reach.

use super::note::{Checkpoint, Verifier};
use super::{key_seq, AuditError, AuditLog, StoredRecord};

/// A checkpoint to check, and where it was found (for the messages).
#[derive(Clone, Debug)]
pub struct Located {
    /// `FILE:line` or `stored checkpoint #n`.
    pub place: String,
    /// The signed note, or why the text found there is not one.
    pub note: Result<String, String>,
}

/// How the oldest records were accounted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Front {
    /// No records.
    Empty,
    /// The log starts at record 1.
    Genesis,
    /// Records `1..=through` were removed; a signed checkpoint proves the cut.
    Proven { through: u64, time: String, place: String },
    /// Records `1..first` are missing and nothing proves why.
    Unproven { first: u64 },
}

/// What checking the checkpoints found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofReport {
    /// Checkpoints that verified and matched a record of the log.
    pub matched: u64,
    /// Checkpoints that verified and name records retention removed.
    pub before_front: u64,
    /// The newest matched checkpoint: (seq, signing time).
    pub latest: Option<(u64, String)>,
    pub front: Front,
    /// Where a rewrite lies, when checkpoints disagree with the log: from
    /// the record after the newest checkpoint that matched (before the
    /// first mismatch) through the first mismatching one.
    pub rewritten: Option<(u64, u64)>,
    /// Each a reason verification fails.
    pub problems: Vec<String>,
    /// Things an auditor should know that do not fail verification.
    pub warnings: Vec<String>,
}

impl ProofReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl AuditLog {
    /// The record with sequence number `seq`, read from its block without
    /// parsing the others; `None` when it is not stored (or unreadable).
    pub fn record_at(&self, seq: u64) -> Result<Option<StoredRecord>, AuditError> {
        let Some(entry) = self.db.range(..=seq.to_be_bytes()).next_back() else { return Ok(None) };
        let (key, value) = entry?;
        let Some(first) = key_seq(&key) else { return Ok(None) };
        let Ok(index) = usize::try_from(seq - first) else { return Ok(None) };
        let Some(line) = value.split(|&b| b == b'\n').nth(index) else { return Ok(None) };
        Ok(serde_json::from_slice::<StoredRecord>(line).ok().filter(|r| r.seq == seq))
    }

    /// The oldest stored record.
    pub fn first_record(&self) -> Result<Option<StoredRecord>, AuditError> {
        let Some(entry) = self.db.iter().next() else { return Ok(None) };
        let (_, value) = entry?;
        let line = value.split(|&b| b == b'\n').next().unwrap_or(&value);
        Ok(serde_json::from_slice(line).ok())
    }

    /// Checks `checkpoints` against the log with `verifier` (see the
    /// module docs). `None` for the verifier reports every checkpoint as
    /// unchecked.
    pub fn check_checkpoints(
        &self,
        verifier: Option<&Verifier>,
        checkpoints: &[Located],
    ) -> Result<ProofReport, AuditError> {
        let first = self.first_record()?;
        let last = super::last_record_position(&self.db)?.map(|(seq, _)| seq);
        let mut report = ProofReport {
            matched: 0,
            before_front: 0,
            latest: None,
            front: Front::Empty,
            rewritten: None,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let mut front_proof: Option<(u64, String, String)> = None;
        let mut matched_seqs = Vec::new();
        let mut first_mismatch: Option<u64> = None;
        let Some(verifier) = verifier else {
            if !checkpoints.is_empty() {
                report.problems.push(format!(
                    "{} checkpoint(s) found but no key to check them with (pass --key)",
                    checkpoints.len()
                ));
            }
            report.front = front(first.as_ref(), None, checkpoints.is_empty(), &mut report);
            return Ok(report);
        };
        for located in checkpoints {
            let place = &located.place;
            let note = match &located.note {
                Ok(note) => note,
                Err(why) => {
                    report.problems.push(format!("{place}: not a signed checkpoint: {why}"));
                    continue;
                }
            };
            let checkpoint = match verifier.open(note).and_then(Checkpoint::parse) {
                Ok(checkpoint) => checkpoint,
                Err(e) => {
                    report.problems.push(format!("{place}: {e}"));
                    continue;
                }
            };
            let (size, time) = (checkpoint.size, checkpoint.time_text().to_string());
            let what = format!("{place} (record {size}, signed {time})");
            let (Some(first), Some(last)) = (&first, last) else {
                if size > 0 {
                    report.problems.push(format!(
                        "the log is empty but the signed checkpoint {what} names record {size}: every record was removed"
                    ));
                }
                continue;
            };
            if size == 0 {
                continue;
            }
            if size > last {
                report.problems.push(format!(
                    "TRUNCATED: the log ends at record {last} but the signed checkpoint {what} names record {size}: \
                     records were removed from the end"
                ));
            } else if size >= first.seq {
                match self.record_at(size)? {
                    None => report.problems.push(format!(
                        "record {size}, named by the signed checkpoint {what}, is missing or unreadable"
                    )),
                    Some(record) if record.hash != checkpoint.hash_hex() => {
                        first_mismatch = Some(first_mismatch.map_or(size, |m| m.min(size)));
                        report.problems.push(format!(
                            "REWRITTEN: record {size} does not have the hash in the signed checkpoint {what}: \
                             the chain was rewritten at or before record {size}"
                        ))
                    }
                    Some(_) => {
                        matched_seqs.push(size);
                        report.matched += 1;
                        if report.latest.as_ref().is_none_or(|(seq, _)| size >= *seq) {
                            report.latest = Some((size, time));
                        }
                    }
                }
            } else if size + 1 == first.seq {
                if first.prev_hash == checkpoint.hash_hex() {
                    report.before_front += 1;
                    front_proof = Some((size, time, place.clone()));
                } else {
                    report.problems.push(format!(
                        "REWRITTEN: the first record ({}) does not continue the signed checkpoint {what}: \
                         its prev_hash differs",
                        first.seq
                    ));
                }
            } else {
                report.before_front += 1;
            }
        }
        if let (Some(bad), Some(first)) = (first_mismatch, &first) {
            let good = matched_seqs.iter().copied().filter(|&seq| seq < bad).max().unwrap_or(first.seq - 1);
            report.rewritten = Some((good + 1, bad));
        }
        report.front = front(first.as_ref(), front_proof, checkpoints.is_empty(), &mut report);
        Ok(report)
    }
}

fn front(
    first: Option<&StoredRecord>,
    proof: Option<(u64, String, String)>,
    no_checkpoints: bool,
    report: &mut ProofReport,
) -> Front {
    let Some(first) = first else { return Front::Empty };
    if first.seq <= 1 {
        return Front::Genesis;
    }
    if let Some((through, time, place)) = proof {
        return Front::Proven { through, time, place };
    }
    let why = format!(
        "the log starts at record {} and no signed checkpoint names record {} with the hash its prev_hash \
         points to, so nothing proves records 1..{} were removed by retention",
        first.seq,
        first.seq - 1,
        first.seq - 1
    );
    if no_checkpoints {
        report.warnings.push(format!("{why} (there are no checkpoints at all: a log from before checkpoints?)"));
    } else {
        report.problems.push(format!("FRONT UNPROVEN: {why}"));
    }
    Front::Unproven { first: first.seq }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::write_checkpoint;
    use crate::audit::note::Signer;
    use crate::audit::AuditRecord;

    fn signer() -> Signer {
        Signer::new("sluice/test", &[9u8; 32]).unwrap()
    }

    fn stored(log: &AuditLog) -> Vec<Located> {
        log.checkpoints()
            .unwrap()
            .into_iter()
            .map(|c| Located { place: format!("stored checkpoint #{}", c.number), note: Ok(c.note) })
            .collect()
    }

    fn log_with(records: u64) -> (tempfile::TempDir, AuditLog) {
        let tmp = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&tmp.path().join("audit")).unwrap();
        for i in 0..records {
            log.append(AuditRecord { time_unix_ms: i, ..AuditRecord::default() }).unwrap();
        }
        (tmp, log)
    }

    #[test]
    fn matching_checkpoints_pass_and_others_name_the_problem() {
        let (_tmp, log) = log_with(4);
        let (seq, hash) = log.chain_head();
        write_checkpoint(&log, &signer(), None, 2, &log.record_at(2).unwrap().unwrap().hash, false).unwrap();
        write_checkpoint(&log, &signer(), None, seq, &hash, false).unwrap();
        let report = log.check_checkpoints(Some(&signer().verifier()), &stored(&log)).unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.matched, report.front.clone()), (2, Front::Genesis));
        assert_eq!(report.latest.map(|(seq, _)| seq), Some(4));

        // A checkpoint beyond the end, one with another hash, and one by another key.
        write_checkpoint(&log, &signer(), None, 9, &hash, false).unwrap();
        write_checkpoint(&log, &signer(), None, 3, &hash, false).unwrap();
        write_checkpoint(&log, &Signer::new("sluice/test", &[1u8; 32]).unwrap(), None, 4, &hash, false).unwrap();
        let report = log.check_checkpoints(Some(&signer().verifier()), &stored(&log)).unwrap();
        assert_eq!(report.problems.len(), 3, "{report:#?}");
        assert!(report.problems[0].starts_with("TRUNCATED: the log ends at record 4"), "{}", report.problems[0]);
        assert!(report.problems[1].starts_with("REWRITTEN: record 3"), "{}", report.problems[1]);
        assert_eq!(report.rewritten, Some((3, 3)), "checkpoint 2 matched, 3 did not");
        assert!(report.problems[2].contains("not signed by key sluice/test+"), "{}", report.problems[2]);
        // Without a key nothing can be checked.
        assert!(!log.check_checkpoints(None, &stored(&log)).unwrap().ok());
    }

    #[test]
    fn a_pruned_front_needs_a_cut_checkpoint() {
        let (_tmp, log) = log_with(5);
        let signer = signer();
        log.prune_before(3, &signer, None).unwrap().unwrap();
        assert_eq!(log.first_record().unwrap().unwrap().seq, 4);
        let report = log.check_checkpoints(Some(&signer.verifier()), &stored(&log)).unwrap();
        assert!(report.ok(), "{report:?}");
        assert!(matches!(report.front, Front::Proven { through: 3, .. }), "{report:?}");

        // Without the cut, and with no checkpoint at all: only a warning.
        let report = log.check_checkpoints(Some(&signer.verifier()), &[]).unwrap();
        assert!(report.ok());
        assert_eq!(report.front, Front::Unproven { first: 4 });
        assert_eq!(report.warnings.len(), 1);

        // Without the cut but with other checkpoints: a failure.
        let (seq, hash) = log.chain_head();
        write_checkpoint(&log, &signer, None, seq, &hash, false).unwrap();
        let mut checkpoints = stored(&log);
        checkpoints.remove(0);
        let report = log.check_checkpoints(Some(&signer.verifier()), &checkpoints).unwrap();
        assert!(!report.ok());
        assert!(report.problems[0].starts_with("FRONT UNPROVEN: the log starts at record 4"), "{report:?}");
    }
}
