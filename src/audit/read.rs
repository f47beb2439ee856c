//! The one walk every reader of the log uses: `sluice audit query` and
//! `export` and `sluice policy replay` on the files of a stopped server,
//! and the admin endpoint of a running one ([`super::remote`]), so both
//! give the same records.

use super::{matches, readable, AuditError, AuditFilter, AuditLog, StoredRecord};

impl AuditLog {
    /// Calls `each` with the records [`AuditLog::query`] returns, in its
    /// order (oldest first), and returns how many. Without a `limit` the
    /// walk streams: records are read block by block and handed on, never
    /// held together, so a year of records costs no more memory than a
    /// day. An error from `each` stops the walk and is returned.
    pub fn read_matching<E: From<AuditError>>(
        &self,
        filter: &AuditFilter,
        mut each: impl FnMut(StoredRecord) -> Result<(), E>,
    ) -> Result<u64, E> {
        if filter.limit.is_some() {
            // The newest N: `query` walks back from the end and holds N.
            let records = self.query(filter)?;
            let count = records.len() as u64;
            for stored in records {
                each(stored)?;
            }
            return Ok(count);
        }
        let mut count = 0;
        for entry in self.db.iter() {
            let (key, value) = entry.map_err(AuditError::from)?;
            for line in value.split(|&b| b == b'\n') {
                let Some(stored) = readable(&key, line) else { continue };
                if matches(filter, &stored.record) {
                    each(stored)?;
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::super::AuditRecord;
    use super::*;

    fn record(team: &str, time_unix_ms: u64) -> AuditRecord {
        AuditRecord { team: team.into(), time_unix_ms, decision: "cloud".into(), ..AuditRecord::default() }
    }

    #[test]
    fn the_walk_returns_what_query_returns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = AuditLog::open(dir.path()).expect("open");
        for i in 0..7 {
            log.append(record(if i % 2 == 0 { "a" } else { "b" }, 1000 + i)).expect("append");
        }
        log.append_batch((7..20).map(|i| record(if i % 3 == 0 { "a" } else { "b" }, 1000 + i)).collect())
            .expect("append a block");
        let filters = [
            AuditFilter::default(),
            AuditFilter { team: Some("a".into()), ..AuditFilter::default() },
            AuditFilter { since_ms: Some(1005), until_ms: Some(1015), ..AuditFilter::default() },
            AuditFilter { team: Some("b".into()), limit: Some(3), ..AuditFilter::default() },
            AuditFilter { limit: Some(0), ..AuditFilter::default() },
        ];
        for filter in &filters {
            let mut walked = Vec::new();
            let count = log
                .read_matching(filter, |stored| {
                    walked.push(stored);
                    Ok::<(), AuditError>(())
                })
                .expect("walk");
            assert_eq!(walked, log.query(filter).expect("query"), "{filter:?}");
            assert_eq!(count, walked.len() as u64);
        }
    }

    #[test]
    fn an_error_from_the_reader_stops_the_walk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = AuditLog::open(dir.path()).expect("open");
        log.append_batch((0..10).map(|i| record("a", i)).collect()).expect("append");
        let mut seen = 0;
        let stopped = log.read_matching(&AuditFilter::default(), |_| {
            seen += 1;
            if seen == 3 {
                return Err(AuditError::NotWritable);
            }
            Ok(())
        });
        assert!(matches!(stopped, Err(AuditError::NotWritable)));
        assert_eq!(seen, 3);
    }
}
