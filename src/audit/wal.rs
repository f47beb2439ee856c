//! The audit log's write-ahead log: with `audit.durability: strict`, each
//! group of sealed blocks is appended to a segment file and made durable
//! with one `fdatasync` before any request waiting on those records is
//! answered, and only then inserted into sled, whose own flushing makes no
//! power-loss promise.
//!
//! # Files
//!
//! `<audit dir>/wal/<first seq, 20 digits>.seg`, 0600 in a 0700 directory.
//! A segment starts with the 8-byte magic `sluwal1\n`, then frames:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 (IEEE) of the payload | payload
//! payload = u64 LE seq of the block's first record | block
//! ```
//!
//! A block is exactly what sled stores under that seq: the records' canonical
//! JSON joined by `\n` (see the parent module), so a replayed record is byte
//! for byte the one whose hash was computed.
//!
//! # Life of a segment
//!
//! The writer thread creates a segment for the first group after start-up or
//! after the previous one was retired (and syncs the directory, so the file
//! itself survives a power cut). A segment is retired (deleted) only after
//! sled was flushed with every record in it: when it grows past
//! [`SEGMENT_BYTES`], when the writer goes idle, on `flush` and at shutdown.
//! So at most one segment is normally present, and a clean shutdown leaves
//! none.
//!
//! # Recovery
//!
//! [`read_dir`] reads every segment in order. A frame that is cut short or
//! fails its checksum ends its segment: it is the group whose `fdatasync`
//! never returned, whose records were therefore never acknowledged. The
//! parent module replays the frames past sled's last record, checking that
//! they continue the chain.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Magic at the start of every segment (format version 1).
const MAGIC: &[u8; 8] = b"sluwal1\n";
/// Frame header: payload length and checksum.
const FRAME_HEADER: usize = 8;
/// Largest payload a frame may claim; anything bigger is a torn header.
/// Blocks hold at most a few hundred records of a few KiB.
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;
/// A segment past this size is retired after its group (sled is flushed
/// first), so the log never holds more than this plus one group.
pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
const SUFFIX: &str = ".seg";

/// One block read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) first_seq: u64,
    pub(crate) block: Vec<u8>,
}

/// What [`read_dir`] found.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) frames: Vec<Frame>,
    /// The segment files read, oldest first.
    pub(crate) segments: Vec<PathBuf>,
    /// Segments whose end was torn (a group whose sync never completed).
    pub(crate) torn: usize,
}

/// The open write-ahead log of the writer thread.
pub(crate) struct Wal {
    dir: PathBuf,
    current: Option<Segment>,
    /// Reused for each group: one `write` per group.
    buf: Vec<u8>,
    /// An earlier write or sync failed: what is on disk is unknown, so
    /// nothing more is appended (the log is broken until restart).
    failed: bool,
}

struct Segment {
    file: File,
    path: PathBuf,
    bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("audit write-ahead log {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit write-ahead log failed earlier; nothing more is written until restart")]
    Failed,
}

impl Wal {
    /// Opens the log in `dir` (created 0700) for appending. Segments found
    /// there must have been replayed already ([`read_dir`]); they are left
    /// alone until the first retirement.
    pub(crate) fn open(dir: &Path) -> Result<Wal, WalError> {
        crate::private_dir::create(dir).map_err(|source| WalError::Io { path: dir.to_path_buf(), source })?;
        Ok(Wal { dir: dir.to_path_buf(), current: None, buf: Vec::new(), failed: false })
    }

    /// Appends `blocks` (`(first seq, block)`) as one frame each and makes
    /// them durable with a single `fdatasync`.
    pub(crate) fn append(&mut self, blocks: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        let Some(&(first_seq, _)) = blocks.first() else {
            return Ok(());
        };
        let result = self.append_inner(first_seq, blocks);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn append_inner(&mut self, first_seq: u64, blocks: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        if self.current.is_none() {
            self.current = Some(self.create_segment(first_seq)?);
        }
        self.buf.clear();
        for (seq, block) in blocks {
            encode_frame(*seq, block, &mut self.buf);
        }
        let Some(segment) = self.current.as_mut() else {
            return Ok(());
        };
        let io_error = |source| WalError::Io { path: segment.path.clone(), source };
        segment.file.write_all(&self.buf).map_err(io_error)?;
        segment.file.sync_data().map_err(|source| WalError::Io { path: segment.path.clone(), source })?;
        segment.bytes += self.buf.len() as u64;
        // Keep the buffer from pinning a huge burst's memory for good.
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Bytes in the current segment.
    pub(crate) fn segment_bytes(&self) -> u64 {
        self.current.as_ref().map_or(0, |s| s.bytes)
    }

    /// Deletes every segment. Only for when sled has been flushed with
    /// every record the segments hold.
    pub(crate) fn retire(&mut self) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        self.current = None;
        remove_segments(&self.dir)
    }

    fn create_segment(&self, first_seq: u64) -> Result<Segment, WalError> {
        let path = self.dir.join(segment_name(first_seq));
        let io_error = |source| WalError::Io { path: path.clone(), source };
        let mut options = OpenOptions::new();
        // Truncate: anything under this name was replayed at open, or is a
        // group that was never acknowledged.
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, crate::private_dir::FILE_MODE);
        let mut file = options.open(&path).map_err(io_error)?;
        file.write_all(MAGIC).map_err(io_error)?;
        file.sync_data().map_err(io_error)?;
        // The new name must survive a power cut as well as its contents.
        sync_dir(&self.dir).map_err(io_error)?;
        Ok(Segment { file, path, bytes: MAGIC.len() as u64 })
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

fn encode_frame(first_seq: u64, block: &[u8], out: &mut Vec<u8>) {
    let len = 8 + block.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&first_seq.to_le_bytes());
    crc.update(block);
    out.reserve(FRAME_HEADER + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(block);
}

/// The frames of one segment's bytes, and whether its end was torn.
fn decode_segment(bytes: &[u8]) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        // Created but its magic never reached the disk: no frame was
        // acknowledged from it.
        return (frames, !bytes.is_empty());
    };
    while !rest.is_empty() {
        let Some(frame) = decode_frame(rest) else {
            return (frames, true);
        };
        let (first_seq, block, used) = frame;
        frames.push(Frame { first_seq, block: block.to_vec() });
        rest = &rest[used..];
    }
    (frames, false)
}

/// `(first seq, block, bytes used)` of the frame at the start of `bytes`;
/// `None` when it is cut short or its checksum fails.
fn decode_frame(bytes: &[u8]) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if !(8..=MAX_PAYLOAD).contains(&len) {
        return None;
    }
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let first_seq = u64::from_le_bytes(payload[..8].try_into().ok()?);
    Some((first_seq, &payload[8..], FRAME_HEADER + len))
}

/// Every frame of every segment in `dir`, oldest segment first. A missing
/// directory is an empty log (logs written before the WAL existed).
pub(crate) fn read_dir(dir: &Path) -> io::Result<Recovered> {
    let mut recovered = Recovered::default();
    for path in segments(dir)? {
        let bytes = fs::read(&path)?;
        let (frames, torn) = decode_segment(&bytes);
        if torn {
            tracing::warn!(segment = %path.display(), "discarding the torn end of an audit WAL segment (never acknowledged)");
            recovered.torn += 1;
        }
        recovered.frames.extend(frames);
        recovered.segments.push(path);
    }
    Ok(recovered)
}

/// The segment files in `dir`, ordered by their first seq.
fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// Deletes every segment in `dir` and makes the deletions durable.
pub(crate) fn remove_segments(dir: &Path) -> Result<(), WalError> {
    let io_error = |path: &Path, source| WalError::Io { path: path.to_path_buf(), source };
    let found = segments(dir).map_err(|e| io_error(dir, e))?;
    if found.is_empty() {
        return Ok(());
    }
    for path in &found {
        fs::remove_file(path).map_err(|e| io_error(path, e))?;
    }
    sync_dir(dir).map_err(|e| io_error(dir, e))
}

/// Keeps segments that could not be replayed out of every later replay,
/// under a name that says why, for whoever investigates.
pub(crate) fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let aside = path.with_extension("seg.rejected");
    fs::rename(path, &aside)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(aside)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(first: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
        (first..first + n).map(|seq| (seq, format!("{{\"seq\":{seq}}}").into_bytes())).collect()
    }

    #[test]
    fn frames_read_back_in_order_across_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut wal = Wal::open(&dir).unwrap();
        wal.append(&blocks(1, 2)).unwrap();
        wal.append(&blocks(3, 1)).unwrap();
        let recovered = read_dir(&dir).unwrap();
        assert_eq!(recovered.torn, 0);
        assert_eq!(recovered.segments, vec![dir.join("00000000000000000001.seg")]);
        let seqs: Vec<u64> = recovered.frames.iter().map(|f| f.first_seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(recovered.frames[2].block, b"{\"seq\":3}");
    }

    #[test]
    fn a_torn_or_corrupt_last_frame_is_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut wal = Wal::open(&dir).unwrap();
        wal.append(&blocks(1, 3)).unwrap();
        let path = dir.join(segment_name(1));
        let whole = fs::read(&path).unwrap();
        // Every cut inside the last frame loses exactly that frame.
        let last_frame_len = FRAME_HEADER + 8 + b"{\"seq\":3}".len();
        for cut in 1..last_frame_len {
            fs::write(&path, &whole[..whole.len() - cut]).unwrap();
            let recovered = read_dir(&dir).unwrap();
            assert_eq!(recovered.torn, 1, "cut {cut}");
            assert_eq!(recovered.frames.iter().map(|f| f.first_seq).collect::<Vec<_>>(), [1, 2], "cut {cut}");
        }
        // A flipped byte in the last frame's payload fails its checksum.
        let mut flipped = whole.clone();
        let at = flipped.len() - 2;
        flipped[at] ^= 0x20;
        fs::write(&path, &flipped).unwrap();
        let recovered = read_dir(&dir).unwrap();
        assert_eq!(recovered.frames.len(), 2);
        assert_eq!(recovered.torn, 1);
        // A segment whose magic never made it holds nothing.
        fs::write(&path, &whole[..3]).unwrap();
        assert!(read_dir(&dir).unwrap().frames.is_empty());
    }

    #[test]
    fn retire_deletes_segments_and_the_next_group_starts_a_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut wal = Wal::open(&dir).unwrap();
        wal.append(&blocks(1, 1)).unwrap();
        assert!(wal.segment_bytes() > MAGIC.len() as u64);
        wal.retire().unwrap();
        assert_eq!(wal.segment_bytes(), 0);
        assert!(read_dir(&dir).unwrap().segments.is_empty());
        wal.append(&blocks(2, 1)).unwrap();
        assert_eq!(read_dir(&dir).unwrap().segments, vec![dir.join(segment_name(2))]);
    }

    #[test]
    fn a_missing_directory_is_an_empty_log_and_other_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_dir(&tmp.path().join("wal")).unwrap().frames.is_empty());
        fs::write(tmp.path().join("00000000000000000001.seg.rejected"), b"junk").unwrap();
        fs::write(tmp.path().join("notes.txt"), b"junk").unwrap();
        assert!(read_dir(tmp.path()).unwrap().segments.is_empty());
    }
}
