//! Which API keys `flowgate serve` accepts.
//!
//! In order: `--api-key` (one plain key), `--api-key-hashes` (the Lambda's `principal=sha256`
//! list), or else a key file in the data directory, generated on first start and reused after.
//! The file is how a local CLI authenticates without anyone copying a secret around: it reads
//! the same `<data dir>/api-key`. The key itself is never logged, only where it is.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use flowgate_api::ApiKeys;
use tracing::warn;

use super::{ServeArgs, ServeError};

/// Name of the generated key file inside the data directory (the CLI reads the same file).
pub const API_KEY_FILE: &str = "api-key";

/// The principal a single plain key (flag or file) authenticates as.
const LOCAL_PRINCIPAL: &str = "local";

/// Random bytes in a generated key (hex-encoded, so twice as many characters).
const KEY_BYTES: usize = 32;

/// Where the accepted keys came from (what the startup log says instead of the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--api-key` / `FLOWGATE_API_KEY`.
    Flag,
    /// `--api-key-hashes` / `FLOWGATE_API_KEY_HASHES`, with this many principals.
    Hashes { principals: usize },
    /// The key file; `created` when this start generated it.
    File { path: PathBuf, created: bool },
}

impl KeySource {
    /// One log line saying where the key is, never what it is.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Flag => {
                "API key: the one given by --api-key/FLOWGATE_API_KEY (clients send it in \
                 x-api-key)"
                    .to_string()
            }
            KeySource::Hashes { principals } => {
                format!("API keys: {principals} key hash(es) from FLOWGATE_API_KEY_HASHES")
            }
            KeySource::File {
                path,
                created: true,
            } => format!(
                "API key: generated into {} (mode 0600); the flowgate CLI on this machine reads \
                 it from there",
                path.display()
            ),
            KeySource::File {
                path,
                created: false,
            } => format!(
                "API key: the one in {} (the flowgate CLI on this machine reads it from there)",
                path.display()
            ),
        }
    }

    /// The key file, when the key lives in one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            KeySource::File { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// The accepted keys and where they came from.
pub(super) struct Resolved {
    pub keys: ApiKeys,
    pub source: KeySource,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("keys", &self.keys)
            .field("source", &self.source)
            .finish()
    }
}

/// Decide which keys to accept (see the module docs for the order).
pub(super) fn resolve(args: &ServeArgs, data_dir: &Path) -> Result<Resolved, ServeError> {
    let plain = args
        .api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let hashes = args
        .api_key_hashes
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty());
    match (plain, hashes) {
        (Some(_), Some(_)) => Err(ServeError::Keys(
            "both --api-key (FLOWGATE_API_KEY) and --api-key-hashes (FLOWGATE_API_KEY_HASHES) \
             are set; set one of them"
                .to_string(),
        )),
        (Some(key), None) => Ok(Resolved {
            keys: ApiKeys::single(LOCAL_PRINCIPAL, key),
            source: KeySource::Flag,
        }),
        (None, Some(spec)) => {
            let keys = ApiKeys::from_hashes(spec).map_err(|e| ServeError::Keys(e.to_string()))?;
            let principals = spec
                .split([',', '\n'])
                .filter(|s| !s.trim().is_empty())
                .count();
            Ok(Resolved {
                keys,
                source: KeySource::Hashes { principals },
            })
        }
        (None, None) => {
            let path = data_dir.join(API_KEY_FILE);
            let (key, created) = read_or_create_key_file(&path)?;
            Ok(Resolved {
                keys: ApiKeys::single(LOCAL_PRINCIPAL, &key),
                source: KeySource::File { path, created },
            })
        }
    }
}

/// A new random key: 32 bytes from the thread's CSPRNG, hex-encoded.
pub(super) fn generate_key() -> String {
    let bytes: [u8; KEY_BYTES] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key in `path`, or a new one written there with mode 0600. Two processes racing to create
/// it both end up with the one written first.
fn read_or_create_key_file(path: &Path) -> Result<(String, bool), ServeError> {
    let file_error = |e: std::io::Error, doing: &str| {
        ServeError::Keys(format!(
            "cannot {doing} the key file {}: {e}; fix its permissions, delete it to have a new \
             key generated, or pass --api-key",
            path.display()
        ))
    };
    match read_key_file(path) {
        Ok(key) => return Ok((key, false)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(e, "read")),
    }
    let key = generate_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(format!("{key}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| file_error(e, "write"))?;
            Ok((key, true))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key_file(path)
            .map(|key| (key, false))
            .map_err(|e| file_error(e, "read")),
        Err(e) => Err(file_error(e, "create")),
    }
}

/// Read an existing key file, warning when others may read it too.
fn read_key_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let key = text.trim();
    if key.is_empty() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the API key file can be read by other users; run `chmod 600 {}`",
                path.display()
            );
        }
    }
    Ok(key.to_string())
}

/// Create the data directory (and parents) if needed; a new one is private to the user
/// (mode 0700), since it holds the API key and every run's inputs and outputs.
pub(super) fn create_private_dir(dir: &Path) -> Result<(), ServeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| ServeError::DataDir {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_written_privately_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs::with_data_dir(dir.path());
        let first = resolve(&args, dir.path()).unwrap();
        let path = dir.path().join(API_KEY_FILE);
        assert_eq!(
            first.source,
            KeySource::File {
                path: path.clone(),
                created: true
            }
        );
        let key = std::fs::read_to_string(&path).unwrap().trim().to_string();
        assert_eq!(key.len(), 2 * KEY_BYTES);
        assert_eq!(first.keys.principal_for(&key), Some(LOCAL_PRINCIPAL));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = resolve(&args, dir.path()).unwrap();
        assert!(matches!(
            again.source,
            KeySource::File { created: false, .. }
        ));
        assert_eq!(again.keys.principal_for(&key), Some(LOCAL_PRINCIPAL));
        // The description says where the key is, never what it is.
        assert!(!first.source.describe().contains(&key));
    }

    #[test]
    fn a_given_key_or_hashes_win_and_both_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServeArgs::with_data_dir(dir.path());
        args.api_key = Some("given".into());
        let r = resolve(&args, dir.path()).unwrap();
        assert_eq!(r.source, KeySource::Flag);
        assert!(r.keys.principal_for("given").is_some());
        assert!(!dir.path().join(API_KEY_FILE).exists());

        args.api_key_hashes = Some(format!("ci={}", flowgate_api::hash_key("ci-key")));
        assert!(matches!(
            resolve(&args, dir.path()),
            Err(ServeError::Keys(_))
        ));

        args.api_key = None;
        let r = resolve(&args, dir.path()).unwrap();
        assert_eq!(r.source, KeySource::Hashes { principals: 1 });
        assert_eq!(r.keys.principal_for("ci-key"), Some("ci"));

        args.api_key_hashes = Some("ci=nothex".into());
        assert!(matches!(
            resolve(&args, dir.path()),
            Err(ServeError::Keys(_))
        ));
    }

    #[test]
    fn an_empty_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(API_KEY_FILE), "\n").unwrap();
        let err = resolve(&ServeArgs::with_data_dir(dir.path()), dir.path()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
