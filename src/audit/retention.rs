//! Retention: removing the oldest records without breaking what `verify`
//! can prove.
//!
//! Only whole blocks go, from the front, and only while every record in
//! the block is older than the cutoff; the newest block always stays, so
//! the head keeps a record to name. Before anything is removed a signed
//! "cut" checkpoint names the last removed record's seq and hash (stored
//! and appended to the checkpoints file like any checkpoint): the first
//! record left has exactly that hash as its `prev_hash`, which is how
//! `verify` tells a retention cut from records removed by someone else.
//! The blocks then go in one atomic sled batch, so a crash leaves either
//! all of them or none.

use std::path::Path;

use super::checkpoint::{write_checkpoint, CheckpointError};
use super::note::Signer;
use super::{key_seq, AuditLog, StoredRecord};

/// What one retention pass removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    pub blocks: usize,
    pub records: u64,
    /// The last removed record; the log now starts at the one after it.
    pub through_seq: u64,
}

impl AuditLog {
    /// Removes the oldest whole blocks whose records are all older than
    /// `cutoff_ms` (never the newest block), after signing a cut
    /// checkpoint; `None` when nothing was old enough.
    pub fn prune_before(
        &self,
        cutoff_ms: u64,
        signer: &Signer,
        file: Option<&Path>,
    ) -> Result<Option<Pruned>, CheckpointError> {
        let mut keys = Vec::new();
        let mut records = 0u64;
        // The last removed record, and the record after it.
        let mut last: Option<(u64, String)> = None;
        let mut next: Option<StoredRecord> = None;
        let mut blocks = self.db.iter().peekable();
        while let Some(entry) = blocks.next() {
            let (key, value) = entry.map_err(super::AuditError::from)?;
            let lines: Option<Vec<StoredRecord>> =
                value.split(|&b| b == b'\n').map(|line| serde_json::from_slice(line).ok()).collect();
            let Some(lines) = lines else {
                return Err(CheckpointError::ChainBroken(format!(
                    "an unreadable block at key {:?} stops the cut",
                    key_seq(&key)
                )));
            };
            let removable = blocks.peek().is_some() && lines.iter().all(|r| r.record.time_unix_ms < cutoff_ms);
            if !removable {
                next = lines.into_iter().next();
                break;
            }
            if let Some(stored) = lines.last() {
                last = Some((stored.seq, stored.hash.clone()));
            }
            records += lines.len() as u64;
            keys.push(key);
        }
        let Some((through_seq, hash)) = last else { return Ok(None) };
        // The cut must be where the chain continues, or the proof it
        // leaves behind would not hold.
        match &next {
            Some(next) if next.seq == through_seq + 1 && next.prev_hash == hash => {}
            _ => {
                return Err(CheckpointError::ChainBroken(format!(
                    "the record after {through_seq} does not continue the chain"
                )))
            }
        }
        write_checkpoint(self, signer, file, through_seq, &hash, true)?;
        let mut batch = sled::Batch::default();
        for key in &keys {
            batch.remove(key);
        }
        self.db.apply_batch(batch).map_err(super::AuditError::from)?;
        self.flush()?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.first_seq = state.first_seq.max(through_seq + 1);
        Ok(Some(Pruned { blocks: keys.len(), records, through_seq }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::Checkpoint;
    use crate::audit::AuditRecord;

    fn at(time_unix_ms: u64) -> AuditRecord {
        AuditRecord { time_unix_ms, ..AuditRecord::default() }
    }

    #[test]
    fn whole_old_blocks_go_after_a_signed_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&tmp.path().join("audit")).unwrap();
        let signer = Signer::new("sluice/test", &[5u8; 32]).unwrap();
        log.append_batch(vec![at(100), at(110)]).unwrap(); // 1, 2
        log.append_batch(vec![at(120), at(300)]).unwrap(); // 3, 4: one record too new
        log.append_batch(vec![at(130)]).unwrap(); // 5
        log.append_batch(vec![at(140)]).unwrap(); // 6: the newest block stays

        assert_eq!(log.prune_before(50, &signer, None).unwrap(), None, "nothing is old enough");
        let pruned = log.prune_before(200, &signer, None).unwrap().unwrap();
        assert_eq!(pruned, Pruned { blocks: 1, records: 2, through_seq: 2 });
        assert_eq!(log.len(), 4);
        let first = log.query(&Default::default()).unwrap()[0].clone();
        assert_eq!(first.seq, 3);

        let cut = log.latest_checkpoint().unwrap().unwrap();
        let cut = Checkpoint::parse(signer.verifier().open(&cut.note).unwrap()).unwrap();
        assert!(cut.is_cut());
        assert_eq!((cut.size, cut.hash_hex()), (2, first.prev_hash.clone()));
        // The chain that is left still verifies.
        assert!(log.verify().unwrap().first_bad.is_none());

        // Everything is old now; the newest block still stays.
        let pruned = log.prune_before(u64::MAX, &signer, None).unwrap().unwrap();
        assert_eq!(pruned.through_seq, 5);
        assert_eq!(log.query(&Default::default()).unwrap().len(), 1);
        assert!(log.verify().unwrap().first_bad.is_none());
    }
}
