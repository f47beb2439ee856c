//! Directories only sluice's own user may read: the audit store and the CA.
//!
//! Audit records hold prompt digests, findings, teams and users; the CA
//! holds a signing key. Both go into directories created 0700 (with any
//! missing parents, such as `data/`) and files tightened to 0600, whatever
//! the umask, and an existing directory or file left looser by an older
//! sluice or an operator is tightened when it is opened. Files the store
//! creates later are unreachable to others through the 0700 directory.

use std::fs;
use std::io;
use std::path::Path;

/// Mode of sluice's private directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files inside them.
pub const FILE_MODE: u32 = 0o600;

/// Create `dir` (and missing parents) 0700; tighten it to 0700 if it
/// already existed. Parents that already existed are left alone: they may
/// be shared directories such as `/var/lib`.
pub fn create(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)?;
    tighten(dir, DIR_MODE)
}

/// A 32-byte secret as sluice stores it: 64 hex digits (surrounding
/// whitespace ignored).
pub fn parse_secret(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

/// Creates `path` holding 32 fresh random bytes as hex, 0600 from the first
/// byte, in an owner-only directory, and makes the file and its directory
/// entry durable (a crash must not lose a key that was already used).
/// `None` when the file exists already (another process may have just
/// created it): the caller reads that one.
pub fn create_secret(path: &Path) -> io::Result<Option<[u8; 32]>> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        create(dir)?;
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(io::Error::other)?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(e),
    };
    file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())?;
    file.sync_all()?;
    if let Some(dir) = dir {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(Some(secret))
}

/// Tighten every directory under `dir` (itself included) to 0700 and every
/// file to 0600. Symbolic links are not followed.
pub fn tighten_tree(dir: &Path) -> io::Result<()> {
    tighten(dir, DIR_MODE)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tighten_tree(&entry.path())?;
        } else if kind.is_file() {
            tighten(&entry.path(), FILE_MODE)?;
        }
    }
    Ok(())
}

/// Set a directory to exactly 0700, or clear a file's group and other bits
/// (never adding any, so a read-only file stays read-only).
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    let wanted = if mode == DIR_MODE { DIR_MODE } else { current & mode };
    if current != wanted {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_missing_parents_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("audit");
        create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("data")), 0o700);
    }

    #[test]
    fn tightens_what_already_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        let dir = shared.join("store");
        fs::create_dir_all(dir.join("blobs")).unwrap();
        fs::write(dir.join("db"), b"x").unwrap();
        fs::write(dir.join("blobs").join("1"), b"x").unwrap();
        fs::write(dir.join("ro"), b"x").unwrap();
        for (path, m) in [(&shared, 0o755), (&dir, 0o775), (&dir.join("blobs"), 0o755)] {
            fs::set_permissions(path, fs::Permissions::from_mode(m)).unwrap();
        }
        fs::set_permissions(dir.join("db"), fs::Permissions::from_mode(0o664)).unwrap();
        fs::set_permissions(dir.join("blobs").join("1"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o444)).unwrap();

        create(&dir).unwrap();
        tighten_tree(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("blobs")), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o600);
        assert_eq!(mode(&dir.join("blobs").join("1")), 0o600);
        assert_eq!(mode(&dir.join("ro")), 0o400, "tightening never loosens");
        assert_eq!(mode(&shared), 0o755, "an existing parent is not sluice's to change");
    }
}
