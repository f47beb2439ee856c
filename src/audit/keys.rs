//! The audit log's two per-deployment secrets, created on first start:
//!
//! - `<audit.dir>/checkpoint.key`: the Ed25519 seed that signs checkpoints
//!   (64 hex digits). Its public half is what auditors pin
//!   (`sluice audit checkpoint --public-key`).
//! - `<audit.dir>/prompt.key`: the HMAC-SHA-256 key of the prompt digest
//!   (`prompt_hmac`), 32 random bytes as 64 hex digits, unless
//!   `audit.prompt_key_env` names an environment variable holding them.
//!
//! Keep both. A new signing key cannot vouch for checkpoints the old one
//! signed (they then fail `verify` unless checked with the old key, pinned),
//! and a new prompt key stops new digests correlating with older ones.
//!
//! Both are created 0600 in the 0700 audit directory and, like the CA key,
//! refused when group or others can read them: a copied signing key could
//! sign a forged checkpoint, and a copied prompt key makes prompt digests
//! confirmable by guessing again. They must be loaded before the log is
//! opened, because opening it tightens every file in the directory.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::note::{NoteError, Signer, Verifier};
use crate::config::AuditConfig;

pub const SIGNING_KEY_FILE: &str = "checkpoint.key";
pub const PROMPT_KEY_FILE: &str = "prompt.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key file {} is readable by group or others (mode {mode:03o}); run: chmod 600 {} (and consider the key disclosed)", path.display(), path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{where_}: expected 64 hex digits (32 bytes)")]
    Invalid { where_: String },
    #[error("audit.prompt_key_env: environment variable {0} is not set")]
    MissingEnv(String),
    #[error("audit.checkpoint_origin: {0}")]
    Origin(#[from] NoteError),
}

/// The key of the prompt digest. Debug never shows it.
#[derive(Clone)]
pub struct PromptKey([u8; 32]);

impl std::fmt::Debug for PromptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptKey(..)")
    }
}

impl PromptKey {
    pub fn new(key: [u8; 32]) -> PromptKey {
        PromptKey(key)
    }

    /// From `audit.prompt_key_env` when set (it must then hold the key),
    /// else `<audit.dir>/prompt.key`, created on first use.
    pub fn load(config: &AuditConfig) -> Result<PromptKey, KeyError> {
        if let Some(var) = &config.prompt_key_env {
            let value = std::env::var(var).map_err(|_| KeyError::MissingEnv(var.clone()))?;
            return crate::private_dir::parse_secret(&value)
                .map(PromptKey)
                .ok_or(KeyError::Invalid { where_: format!("${var}") });
        }
        load_or_create_secret(&config.dir.join(PROMPT_KEY_FILE)).map(PromptKey)
    }

    /// A fresh HMAC-SHA-256 under this key.
    pub fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

/// The checkpoint signer from `<dir>/checkpoint.key`, created on first use.
pub fn load_or_create_signer(dir: &Path, origin: &str) -> Result<Signer, KeyError> {
    let seed = load_or_create_secret(&dir.join(SIGNING_KEY_FILE))?;
    Ok(Signer::new(origin, &seed)?)
}

/// The verifier of the signing key in `dir`; `None` when there is none
/// (nothing was ever signed there). Never creates a key.
pub fn load_verifier(dir: &Path, origin: &str) -> Result<Option<Verifier>, KeyError> {
    let path = dir.join(SIGNING_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let seed = read_secret(&path)?;
    Ok(Some(Signer::new(origin, &seed)?.verifier()))
}

/// The default checkpoint origin: `sluice/<host name>`.
pub fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| super::note::check_name(name).is_ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("sluice/{host}")
}

fn read_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    check_mode(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    crate::private_dir::parse_secret(&text).ok_or_else(|| KeyError::Invalid { where_: path.display().to_string() })
}

/// Reads the key at `path`, or creates it from fresh random bytes, 0600
/// from the first byte, in an owner-only directory.
fn load_or_create_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    if path.exists() {
        return read_secret(path);
    }
    match crate::private_dir::create_secret(path) {
        Ok(Some(secret)) => {
            tracing::info!(path = %path.display(), "created a new audit key (0600)");
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Ok(None) => read_secret(path),
        Err(source) => Err(KeyError::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(unix)]
fn check_mode(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_created_0600_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let signer = load_or_create_signer(&dir, "sluice/test").unwrap();
        let path = dir.join(SIGNING_KEY_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let again = load_or_create_signer(&dir, "sluice/test").unwrap();
        assert_eq!(signer.verifier(), again.verifier());
        assert_eq!(load_verifier(&dir, "sluice/test").unwrap(), Some(signer.verifier()));
        assert_eq!(load_verifier(&tmp.path().join("none"), "sluice/test").unwrap(), None);

        let config = AuditConfig { dir: dir.clone(), ..AuditConfig::default() };
        let key = PromptKey::load(&config).unwrap();
        let prompt = dir.join(PROMPT_KEY_FILE);
        assert_eq!(std::fs::metadata(&prompt).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(PromptKey::load(&config).unwrap().0, key.0);
        assert_ne!(key.0, signer_seed(&dir), "the two keys are independent");
    }

    fn signer_seed(dir: &Path) -> [u8; 32] {
        read_secret(&dir.join(SIGNING_KEY_FILE)).unwrap()
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        load_or_create_signer(tmp.path(), "sluice/test").unwrap();
        let path = tmp.path().join(SIGNING_KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_signer(tmp.path(), "sluice/test").unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn the_prompt_key_can_come_from_the_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let var = "SLUICE_TEST_PROMPT_KEY_KEYS_RS";
        let config = AuditConfig {
            dir: tmp.path().join("audit"),
            prompt_key_env: Some(var.to_string()),
            ..AuditConfig::default()
        };
        assert!(matches!(PromptKey::load(&config), Err(KeyError::MissingEnv(_))));
        std::env::set_var(var, "11".repeat(32));
        assert_eq!(PromptKey::load(&config).unwrap().0, [0x11; 32]);
        std::env::set_var(var, "11".repeat(31));
        assert!(matches!(PromptKey::load(&config), Err(KeyError::Invalid { .. })));
        std::env::remove_var(var);
        assert!(!tmp.path().join("audit").join(PROMPT_KEY_FILE).exists(), "no file when the env var is named");
    }

    #[test]
    fn the_prompt_hmac_is_rfc_4231() {
        // RFC 4231 test case 2 uses the key "Jefe", which is not 32 bytes;
        // test case 1's 20-byte key, zero-padded, gives the same HMAC as a
        // 32-byte key with those bytes followed by zeros.
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let mut mac = PromptKey::new(key).hmac();
        mac.update(b"Hi There");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }
}
