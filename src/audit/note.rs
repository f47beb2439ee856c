//! Signed checkpoints of the audit chain, in two public formats, so an
//! auditor can check them with any C2SP tool as well as with sluice.
//!
//! A checkpoint is a [C2SP tlog-checkpoint] note text signed as a
//! [C2SP signed note] with Ed25519:
//!
//! ```text
//! sluice/gw-1                                     origin (the key name too)
//! 1042                                            head seq: records appended so far
//! 3q2+7w...=                                      base64 of the head record's hash (32 bytes)
//! time 2024-05-01T12:00:00.123Z                   extension: when it was signed
//! retention-cut                                   extension: only on cut checkpoints
//!                                                 blank line
//! — sluice/gw-1 <base64(key id || signature)>     signature over the text above the blank line
//! ```
//!
//! sluice's "root hash" is the `hash` of record `size` in the audit chain
//! (see `audit/mod.rs`), not a Merkle tree root: the chain makes every
//! earlier record part of it all the same, but proofs of inclusion and
//! consistency between two checkpoints are done by walking the log, not
//! with tlog proofs.
//!
//! The key id is the first 4 bytes of
//! `SHA-256(name || "\n" || 0x01 || public key)`, and the verifier key an
//! auditor keeps is `<name>+<key id hex>+<base64(0x01 || public key)>`, as
//! in Go's `golang.org/x/mod/sumdb/note`. A signature line is accepted when
//! its key id is the one its own name gives with the pinned public key:
//! the public key is what is trusted, so checkpoints signed before an
//! origin was renamed still verify.
//!
//! [C2SP tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [C2SP signed note]: https://c2sp.org/signed-note

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signed-note signature type of Ed25519.
const ED25519_TYPE: u8 = 0x01;
/// Starts every signature line: U+2014 and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Bounds on what is parsed, as Go's note package has them.
const MAX_NOTE_BYTES: usize = 1 << 20;
const MAX_SIGNATURES: usize = 100;
/// Extension line naming the time a checkpoint was signed.
const TIME_PREFIX: &str = "time ";
/// Extension line of a checkpoint written before retention removed the
/// records up to and including its seq.
pub const RETENTION_CUT: &str = "retention-cut";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("`{0}` cannot be a key name (it must be non-empty, without spaces or '+')")]
    BadName(String),
    #[error("malformed verifier key: {0}")]
    BadKey(String),
    #[error("not signed by key {0} (forged, or signed by another key)")]
    UnknownKey(String),
    #[error("signature by key {0} does not verify (checkpoint edited or forged)")]
    BadSignature(String),
}

/// The note text of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    /// The head's sequence number: how many records were appended.
    pub size: u64,
    /// The head record's `hash`, as bytes.
    pub hash: [u8; 32],
    /// Lines after the hash, in order (`time ...`, `retention-cut`).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint of record `size` with `hash_hex`, signed at `time_ms`.
    pub fn new(origin: &str, size: u64, hash_hex: &str, time_ms: u64, cut: bool) -> Result<Checkpoint, NoteError> {
        check_name(origin)?;
        let hash = hex::decode(hash_hex)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| NoteError::Malformed(format!("`{hash_hex}` is not a 64-digit hex hash")))?;
        let time = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms));
        let mut extensions = vec![format!("{TIME_PREFIX}{time}")];
        if cut {
            extensions.push(RETENTION_CUT.to_string());
        }
        Ok(Checkpoint { origin: origin.to_string(), size, hash, extensions })
    }

    /// The note text: every line ends in a newline.
    pub fn text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.hash));
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a note text (what [`Verifier::open`] returns).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: &str| NoteError::Malformed(why.to_string());
        let body = text.strip_suffix('\n').ok_or_else(|| bad("the text does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|l| !l.is_empty()).ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("the tree size is not a decimal number without leading zeros"));
        }
        let size: u64 = size.parse().map_err(|_| bad("the tree size is out of range"))?;
        let hash = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let hash = BASE64
            .decode(hash)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| bad("the root hash is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Checkpoint { origin: origin.to_string(), size, hash, extensions })
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// When it was signed, from its `time` line.
    pub fn time_ms(&self) -> Option<u64> {
        let line = self.extensions.iter().find_map(|l| l.strip_prefix(TIME_PREFIX))?;
        let t = humantime::parse_rfc3339(line).ok()?;
        t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
    }

    /// The `time` line's value, or "no time" for a checkpoint without one.
    pub fn time_text(&self) -> &str {
        self.extensions.iter().find_map(|l| l.strip_prefix(TIME_PREFIX)).unwrap_or("no time")
    }

    /// Written before retention removed records `1..=size`.
    pub fn is_cut(&self) -> bool {
        self.extensions.iter().any(|l| l == RETENTION_CUT)
    }
}

/// The signing half: sluice's Ed25519 key under a name.
pub struct Signer {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("Signer").field("verifier", &self.verifier().to_string()).finish()
    }
}

impl Signer {
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<Signer, NoteError> {
        check_name(name)?;
        Ok(Signer { name: name.to_string(), key: SigningKey::from_bytes(seed) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> Verifier {
        Verifier::new(&self.name, self.key.verifying_key())
    }

    /// The signed note: `text`, a blank line and one signature line.
    /// `text` must be a note text (newline-terminated, no blank line).
    pub fn sign(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(blob))
    }

    /// A checkpoint, signed.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> String {
        self.sign(&checkpoint.text())
    }
}

/// The verifying half: a name and a public key, as an auditor pins it.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// `<name>+<key id hex>+<base64(0x01 || public key)>`.
impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut typed = vec![ED25519_TYPE];
        typed.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id), BASE64.encode(typed))
    }
}

impl Verifier {
    fn new(name: &str, key: VerifyingKey) -> Verifier {
        Verifier { name: name.to_string(), id: key_id(name, &key), key }
    }

    /// Reads a verifier key string (see the Display impl).
    pub fn parse(vkey: &str) -> Result<Verifier, NoteError> {
        let vkey = vkey.trim();
        let bad = |why: &str| NoteError::BadKey(why.to_string());
        // Names hold no '+' but base64 may: split from the left.
        let (name, rest) = vkey.split_once('+').ok_or_else(|| bad("expected <name>+<id>+<key>"))?;
        let (id, typed) = rest.split_once('+').ok_or_else(|| bad("expected <name>+<id>+<key>"))?;
        check_name(name)?;
        let id = hex::decode(id)
            .ok()
            .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
            .filter(|_| id.len() == 8)
            .ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let typed = BASE64.decode(typed).map_err(|_| bad("the key is not base64"))?;
        let (kind, key) = typed.split_first().ok_or_else(|| bad("empty key"))?;
        if *kind != ED25519_TYPE {
            return Err(bad("not an Ed25519 key (type 0x01)"));
        }
        let key = <[u8; 32]>::try_from(key).map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not a valid Ed25519 public key"))?;
        let verifier = Verifier::new(name, key);
        if verifier.id != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(verifier)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks `note`'s signature by this key and returns its text.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, signatures) = split_note(note)?;
        for line in signatures {
            let (name, id, signature) = signature_line(line)?;
            if id != key_id(name, &self.key) {
                continue;
            }
            // The first line by this key decides, as in Go's note.Open.
            let valid = <[u8; 64]>::try_from(signature)
                .ok()
                .map(|bytes| Signature::from_bytes(&bytes))
                .is_some_and(|sig| self.key.verify_strict(text.as_bytes(), &sig).is_ok());
            return if valid { Ok(text) } else { Err(NoteError::BadSignature(self.to_string())) };
        }
        Err(NoteError::UnknownKey(self.to_string()))
    }
}

/// Splits a signed note into its text (with its final newline) and its
/// signature lines, checking the framing.
fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    let bad = |why: &str| NoteError::Malformed(why.to_string());
    if note.len() > MAX_NOTE_BYTES {
        return Err(bad("longer than 1 MiB"));
    }
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(bad("control characters"));
    }
    let split = note.rfind("\n\n").ok_or_else(|| bad("no blank line before the signatures"))?;
    let text = &note[..split + 1];
    let signatures = note[split + 2..].strip_suffix('\n').ok_or_else(|| bad("the note does not end in a newline"))?;
    let lines: Vec<&str> = signatures.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(bad("more than 100 signatures"));
    }
    Ok((text, lines))
}

/// `— <name> <base64(key id || signature)>` as (name, key id, signature).
fn signature_line(line: &str) -> Result<(&str, [u8; 4], Vec<u8>), NoteError> {
    let bad = |why: &str| NoteError::Malformed(why.to_string());
    let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| bad("a signature line does not start with '— '"))?;
    let (name, blob) = rest.split_once(' ').ok_or_else(|| bad("a signature line has no signature"))?;
    check_name(name).map_err(|_| bad("a signature line has a bad key name"))?;
    let blob = BASE64.decode(blob).map_err(|_| bad("a signature is not base64"))?;
    if blob.len() < 5 {
        return Err(bad("a signature is too short"));
    }
    let id = [blob[0], blob[1], blob[2], blob[3]];
    Ok((name, id, blob[4..].to_vec()))
}

/// The first 4 bytes of SHA-256(name || "\n" || 0x01 || public key).
fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A key name: non-empty, no whitespace, no '+', no control characters.
pub fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '+') {
        return Err(NoteError::BadName(name.to_string()));
    }
    Ok(())
}

/// One note from a file of concatenated notes, with the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteInFile {
    pub line: usize,
    /// The note, or why the text there is not one.
    pub note: Result<String, String>,
}

/// Splits a file of signed notes (each ending in its signature lines;
/// blank lines between notes are allowed) into notes.
pub fn split_notes(file: &str) -> Vec<NoteInFile> {
    /// Where the current note is: its text, the blank line, its signatures.
    #[derive(Clone, Copy, PartialEq)]
    enum Part {
        Between,
        Text,
        Blank,
        Signatures,
    }
    let mut notes = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut part = Part::Between;
    for (i, line) in file.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches('\n');
        let is_signature = content.starts_with(SIGNATURE_PREFIX);
        // A line that ends a note is looked at again as the start of the next.
        loop {
            match part {
                Part::Between => {
                    if !content.is_empty() {
                        start = i + 1;
                        current.push_str(line);
                        part = Part::Text;
                    }
                }
                Part::Text => {
                    current.push_str(line);
                    if content.is_empty() {
                        part = Part::Blank;
                    }
                }
                Part::Blank | Part::Signatures if is_signature => {
                    current.push_str(line);
                    part = Part::Signatures;
                }
                Part::Blank => {
                    notes.push(NoteInFile { line: start, note: Err("no signature after the blank line".into()) });
                    current.clear();
                    part = Part::Between;
                    continue;
                }
                Part::Signatures => {
                    notes.push(NoteInFile { line: start, note: Ok(std::mem::take(&mut current)) });
                    part = Part::Between;
                    continue;
                }
            }
            break;
        }
    }
    match part {
        Part::Signatures => notes.push(NoteInFile { line: start, note: Ok(current) }),
        Part::Text | Part::Blank => {
            notes.push(NoteInFile { line: start, note: Err("ends before its signature (interrupted write?)".into()) })
        }
        Part::Between => {}
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of golang.org/x/mod/sumdb/note: its signer key
    // `PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz`
    // holds type 0x01 and this seed.
    const GO_SEED_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str =
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIGNATURE: &str =
        "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_signer() -> Signer {
        let typed = BASE64.decode(GO_SEED_B64).unwrap();
        assert_eq!(typed[0], ED25519_TYPE);
        Signer::new("PeterNeumann", &typed[1..].try_into().unwrap()).unwrap()
    }

    fn signer() -> Signer {
        Signer::new("sluice/test", &[7u8; 32]).unwrap()
    }

    #[test]
    fn signs_and_verifies_exactly_as_go_sumdb_note() {
        let signer = go_signer();
        assert_eq!(signer.verifier().to_string(), GO_VKEY);
        let note = signer.sign(GO_TEXT);
        assert_eq!(note, format!("{GO_TEXT}\n{GO_SIGNATURE}"));
        let verifier = Verifier::parse(GO_VKEY).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(verifier.open(&note), Ok(GO_TEXT));
    }

    #[test]
    fn a_verifier_key_whose_base64_holds_a_plus_parses() {
        // From the tests of transparency-dev/formats (note_cosigv1_test.go).
        let key = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";
        let verifier = Verifier::parse(key).unwrap();
        assert_eq!(verifier.name(), "TEST");
        assert_eq!(verifier.to_string(), key);
    }

    #[test]
    fn checkpoint_round_trips_through_sign_open_parse() {
        let hash = "ab".repeat(32);
        let cp = Checkpoint::new("sluice/test", 1042, &hash, 1_714_564_800_123, false).unwrap();
        let text = cp.text();
        assert!(text.starts_with("sluice/test\n1042\nq6ur"), "{text}");
        assert!(text.ends_with("time 2024-05-01T12:00:00.123Z\n"), "{text}");
        let note = signer().sign_checkpoint(&cp);
        let opened = signer().verifier().open(&note).unwrap();
        let parsed = Checkpoint::parse(opened).unwrap();
        assert_eq!(parsed, cp);
        assert_eq!(parsed.hash_hex(), hash);
        assert_eq!(parsed.time_ms(), Some(1_714_564_800_123));
        assert!(!parsed.is_cut());
        let cut = Checkpoint::new("sluice/test", 9, &hash, 0, true).unwrap();
        assert!(Checkpoint::parse(&cut.text()).unwrap().is_cut());
    }

    #[test]
    fn every_flipped_byte_of_the_text_or_signature_fails() {
        let cp = Checkpoint::new("sluice/test", 5, &"01".repeat(32), 1_000, false).unwrap();
        let note = signer().sign_checkpoint(&cp);
        let verifier = signer().verifier();
        let bytes = note.as_bytes();
        let sig_start = note.find("\n\n").unwrap() + 2;
        for i in 0..bytes.len() {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 0x01;
            let Ok(flipped) = String::from_utf8(flipped) else { continue };
            let result = verifier.open(&flipped);
            assert!(result.is_err(), "byte {i} flipped still verifies:\n{flipped}");
            if i < sig_start - 2 {
                // A changed text keeps its signature line: the signature fails.
                assert!(
                    matches!(result, Err(NoteError::BadSignature(_) | NoteError::Malformed(_))),
                    "byte {i}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn another_key_is_refused() {
        let cp = Checkpoint::new("sluice/test", 5, &"01".repeat(32), 1_000, false).unwrap();
        let note = Signer::new("sluice/test", &[8u8; 32]).unwrap().sign_checkpoint(&cp);
        assert!(matches!(signer().verifier().open(&note), Err(NoteError::UnknownKey(_))));
        // A signature made with the right key but another name still counts:
        // the key is what is pinned.
        let renamed = Signer::new("sluice/renamed", &[7u8; 32]).unwrap().sign_checkpoint(&cp);
        assert!(signer().verifier().open(&renamed).is_ok());
    }

    #[test]
    fn malformed_checkpoints_and_keys_are_refused() {
        for text in [
            "",
            "origin\n",
            "origin\n01\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n",
            "origin\n-1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n",
            "origin\n1\nnot base64\n",
            "origin\n1\nq6ur\n",
            "origin\n1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\nx\n",
            "origin\n1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=",
        ] {
            assert!(Checkpoint::parse(text).is_err(), "{text:?}");
        }
        assert!(Checkpoint::parse("origin\n0\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n").is_ok());
        for key in
            ["", "a+b", "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "x y+00000000+AQ=="]
        {
            assert!(Verifier::parse(key).is_err(), "{key:?}");
        }
        assert!(Signer::new("has space", &[1; 32]).is_err());
        assert!(Signer::new("has+plus", &[1; 32]).is_err());
        assert!(signer().verifier().open("no blank line\n— x AAAA\n").is_err());
    }

    #[test]
    fn a_file_of_notes_splits_into_notes() {
        let a = signer().sign_checkpoint(&Checkpoint::new("sluice/test", 1, &"01".repeat(32), 1, false).unwrap());
        let b = signer().sign_checkpoint(&Checkpoint::new("sluice/test", 2, &"02".repeat(32), 2, true).unwrap());
        let file = format!("{a}\n{b}{a}");
        let notes = split_notes(&file);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(notes[0], NoteInFile { line: 1, note: Ok(a.clone()) });
        assert_eq!(notes[1], NoteInFile { line: 8, note: Ok(b.clone()) });
        assert_eq!(notes[2].note, Ok(a.clone()));
        // An interrupted last write is reported, not taken.
        let torn = format!("{a}\n{}", &b[..20]);
        let notes = split_notes(&torn);
        assert_eq!(notes.len(), 2);
        assert!(notes[1].note.is_err());
    }
}
