//! Where refresh tokens of logged-in accounts survive a daemon restart.
//!
//! One document, `{"version":1,"accounts":[...]}`, holding every
//! [`AccountRecord`]. It lives in the OS secret store when one is reachable
//! (Secret Service on Linux, the Keychain on macOS: service `azbroker`, account
//! `accounts`), else in `<state dir>/accounts.json`, created 0600 in a 0700
//! directory and replaced atomically. `AZBROKER_STORE=file|keyring` forces one.
//! When the secret store answers, the file's logins move into it at startup
//! (the file is removed only once the secret store holds them).
//!
//! Every operation runs on a thread of its own: the keyring crate's D-Bus
//! client blocks (and must not run on a Tokio worker), and file I/O is blocking
//! too. A read-modify-write holds an exclusive lock (`accounts.json.lock` for
//! the file; a process-wide mutex for both) so two writers never lose an update.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use azbroker_proto::Secret;

use super::account_key::AccountKey;
use crate::paths;

const DOCUMENT_VERSION: u32 = 1;
/// Far above any real document (a refresh token is a few KiB).
const MAX_DOCUMENT: u64 = 1024 * 1024;
const KEYRING_SERVICE: &str = "azbroker";
const KEYRING_ACCOUNT: &str = "accounts";
/// A secret store that does not answer within this is treated as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Moving the file's logins into the secret store takes a read and a write.
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What survives a daemon restart: the account and its current refresh token.
/// `Debug` redacts the token (it is a [`Secret`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub key: AccountKey,
    /// `preferred_username` of the id token, e.g. `user@contoso.com`.
    pub username: Option<String>,
    /// The user's home tenant (`tid`) and object id (`oid`), when known.
    pub home_tenant: Option<String>,
    pub object_id: Option<String>,
    /// The newest refresh token; the one before it is never presented again.
    pub refresh_token: Secret,
    /// When this record was last written, seconds since the epoch.
    pub updated_at: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct Document {
    version: u32,
    accounts: Vec<AccountRecord>,
}

#[derive(Clone, Debug)]
enum Backend {
    File(PathBuf),
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    Keyring,
    /// Nowhere to persist: logins last as long as the daemon.
    Nowhere(String),
}

pub struct Store {
    backend: Backend,
    /// For `azbroker status`, e.g. `file /home/u/.local/state/azbroker/accounts.json`.
    description: String,
    lock: Mutex<()>,
}

impl Store {
    /// Chooses the backend: `AZBROKER_STORE`, else the OS secret store when it
    /// answers, else the file. Blocks for at most [`PROBE_TIMEOUT`].
    pub fn from_env() -> Result<Store, String> {
        let file = || match azbroker_proto::paths::state_dir() {
            Some(dir) => Backend::File(dir.join("accounts.json")),
            None => Backend::Nowhere("no state directory (set HOME or XDG_STATE_HOME)".into()),
        };
        let choice = std::env::var("AZBROKER_STORE").unwrap_or_default();
        match choice.trim().to_ascii_lowercase().as_str() {
            "file" => Ok(Store::new(file(), None)),
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            "keyring" => Ok(Store::new(Backend::Keyring, None)),
            "" | "auto" => match probe_keyring() {
                Ok(backend) => Ok(Store::with_file_moved_in(backend, file())),
                Err(why) => Ok(Store::new(file(), Some(why))),
            },
            other => Err(format!(
                "AZBROKER_STORE={other:?} is not valid: use 'file' or 'keyring' (or leave it unset)"
            )),
        }
    }

    /// A file store at `path` (tests, and `AZBROKER_STORE=file`).
    pub fn file(path: PathBuf) -> Store {
        Store::new(Backend::File(path), None)
    }

    fn new(backend: Backend, keyring_unreachable: Option<String>) -> Store {
        let mut description = match &backend {
            Backend::File(path) => format!("file {}", path.display()),
            #[cfg(target_os = "linux")]
            Backend::Keyring => "keyring (Secret Service)".to_string(),
            #[cfg(target_os = "macos")]
            Backend::Keyring => "keyring (macOS Keychain)".to_string(),
            Backend::Nowhere(why) => format!("none: {why}"),
        };
        if let Some(why) = keyring_unreachable {
            description.push_str(&format!(" (no OS secret store: {why})"));
        }
        Store {
            backend,
            description,
            lock: Mutex::new(()),
        }
    }

    /// The keyring `backend`, after moving the logins of the 0600 file into
    /// it. The file loses its tokens only once the keyring holds them; if the
    /// move fails, the file stays the store (nothing is lost or duplicated).
    fn with_file_moved_in(backend: Backend, file: Backend) -> Store {
        let Backend::File(path) = file else {
            return Store::new(backend, None);
        };
        match move_file_into_keyring(&path) {
            Ok(0) => Store::new(backend, None),
            Ok(moved) => {
                let mut store = Store::new(backend, None);
                store.description.push_str(&format!(
                    " (moved {moved} login(s) here from {}, which holds none now)",
                    path.display()
                ));
                store
            }
            Err(why) => Store::new(
                Backend::File(path),
                Some(format!(
                    "cannot move the logins of this file into it: {why}"
                )),
            ),
        }
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Whether saved records survive (else a login lives only in its actor).
    pub fn persists(&self) -> bool {
        !matches!(self.backend, Backend::Nowhere(_))
    }

    pub async fn load(self: &Arc<Self>, key: &AccountKey) -> Result<Option<AccountRecord>, String> {
        let key = key.clone();
        self.off_thread(move |store| {
            let document = store.read()?;
            Ok(document.accounts.into_iter().find(|r| r.key == key))
        })
        .await
    }

    /// Inserts or replaces the record of `record.key`.
    pub async fn save(self: &Arc<Self>, record: AccountRecord) -> Result<(), String> {
        self.off_thread(move |store| {
            store.update(|accounts| {
                accounts.retain(|r| r.key != record.key);
                accounts.push(record);
            })?;
            Ok(())
        })
        .await
    }

    /// Forgets `key`; `true` when there was something to forget.
    pub async fn remove(self: &Arc<Self>, key: &AccountKey) -> Result<bool, String> {
        let key = key.clone();
        self.off_thread(move |store| {
            store.update(|accounts| {
                let before = accounts.len();
                accounts.retain(|r| r.key != key);
                accounts.len() != before
            })
        })
        .await
    }

    /// Every persisted account's key.
    pub async fn keys(self: &Arc<Self>) -> Result<Vec<AccountKey>, String> {
        self.off_thread(|store| Ok(store.read()?.accounts.into_iter().map(|r| r.key).collect()))
            .await
    }

    async fn off_thread<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("azbroker-store".into())
            .spawn(move || {
                let _ = tx.send(job(&store));
            })
            .map_err(|e| format!("cannot start a store thread: {e}"))?;
        rx.await
            .map_err(|_| "the account store failed unexpectedly".to_string())?
    }

    fn read(&self) -> Result<Document, String> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match &self.backend {
            Backend::File(path) => {
                let _file_lock = lock_file(path)?;
                read_file(path)
            }
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            Backend::Keyring => keyring_read(),
            Backend::Nowhere(_) => Ok(Document::default()),
        }
    }

    /// Read, change, write back, under both locks. Returns what `change` returned.
    fn update<R>(&self, change: impl FnOnce(&mut Vec<AccountRecord>) -> R) -> Result<R, String> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match &self.backend {
            Backend::File(path) => {
                let _file_lock = lock_file(path)?;
                let mut document = read_file(path)?;
                let result = change(&mut document.accounts);
                write_file(path, &document)?;
                Ok(result)
            }
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            Backend::Keyring => {
                let mut document = keyring_read()?;
                let result = change(&mut document.accounts);
                keyring_write(&document)?;
                Ok(result)
            }
            Backend::Nowhere(why) => Err(format!("cannot persist the login: {why}")),
        }
    }
}

fn parse(bytes: &[u8], source: &str) -> Result<Document, String> {
    let document: Document = serde_json::from_slice(bytes)
        .map_err(|e| format!("{source} is not an azbroker account document: {e}"))?;
    if document.version != DOCUMENT_VERSION {
        return Err(format!(
            "{source} has version {}, this azbroker reads version {DOCUMENT_VERSION}",
            document.version
        ));
    }
    Ok(document)
}

fn serialize(document: &Document) -> Result<Vec<u8>, String> {
    let document = Document {
        version: DOCUMENT_VERSION,
        accounts: document.accounts.clone(),
    };
    serde_json::to_vec_pretty(&document).map_err(|e| format!("cannot encode accounts: {e}"))
}

fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    paths::ensure_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = azbroker_proto::paths::sibling(path, "lock");
    let file = paths::open_private(&lock_path, false)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))
}

fn read_file(path: &Path) -> Result<Document, String> {
    // On a store thread, so it may block; still never on a FIFO or a device.
    let bytes = match crate::bounded_file::read_blocking(path, MAX_DOCUMENT) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(Document::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    parse(&bytes, &path.display().to_string())
}

/// Writes a 0600 temporary file beside `path`, syncs it, and renames it over
/// `path`, so a crash leaves either the old document or the new one.
fn write_file(path: &Path, document: &Document) -> Result<(), String> {
    let bytes = serialize(document)?;
    let tmp = azbroker_proto::paths::sibling(path, "tmp");
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn keyring_entry() -> Result<keyring::Entry, String> {
    keyring::Entry::new(KEYRING_SERVICE, KEYRING_ACCOUNT)
        .map_err(|e| format!("OS secret store: {}", keyring_failure(&e)))
}

/// What went wrong, in words a user can act on: a locked keyring (whose
/// unlock prompt nobody answered) is the common case on a headless session.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn keyring_failure(error: &keyring::Error) -> String {
    match error {
        keyring::Error::NoStorageAccess(why) => {
            format!("it is locked or refused access ({why}); unlock it, then restart azbrokerd")
        }
        keyring::Error::PlatformFailure(why) => format!("it failed ({why})"),
        other => other.to_string(),
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn keyring_read() -> Result<Document, String> {
    match keyring_entry()?.get_password() {
        Ok(text) => parse(text.as_bytes(), "the OS secret store entry"),
        Err(keyring::Error::NoEntry) => Ok(Document::default()),
        Err(e) => Err(format!("OS secret store: {}", keyring_failure(&e))),
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn keyring_write(document: &Document) -> Result<(), String> {
    let entry = keyring_entry()?;
    if document.accounts.is_empty() {
        return match entry.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(format!("OS secret store: {}", keyring_failure(&e))),
        };
    }
    let bytes = serialize(document)?;
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    entry
        .set_password(&text)
        .map_err(|e| format!("OS secret store: {}", keyring_failure(&e)))
}

/// Moves every record of the file at `path` into the keyring (a record the
/// keyring holds is replaced only by a newer one), then removes the file.
/// Returns how many records the file held. Runs on a thread of its own, as
/// the keyring client must not run on a Tokio worker.
fn move_file_into_keyring(path: &Path) -> Result<usize, String> {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    {
        let path = path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("azbroker-store-move".into())
            .spawn(move || {
                let _ = tx.send((|| {
                    let _file_lock = lock_file(&path)?;
                    let from_file = read_file(&path)?;
                    if from_file.accounts.is_empty() {
                        return Ok(0);
                    }
                    let mut document = keyring_read()?;
                    for record in &from_file.accounts {
                        // A tie (both written within one second) goes to the
                        // file: it is written only while the secret store
                        // cannot be, so its record is the later one.
                        let newer = document
                            .accounts
                            .iter()
                            .all(|r| r.key != record.key || r.updated_at <= record.updated_at);
                        if newer {
                            document.accounts.retain(|r| r.key != record.key);
                            document.accounts.push(record.clone());
                        }
                    }
                    keyring_write(&document)?;
                    // Only now that the keyring holds them.
                    std::fs::remove_file(&path)
                        .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
                    Ok(from_file.accounts.len())
                })());
            })
            .map_err(|e| e.to_string())?;
        rx.recv_timeout(MOVE_TIMEOUT).unwrap_or_else(|_| {
            Err(format!(
                "the OS secret store did not answer within {} s",
                MOVE_TIMEOUT.as_secs()
            ))
        })
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = path;
        Ok(0)
    }
}

/// `Ok` unless the Secret Service's default collection (where the first
/// entry would be created) is locked. Runs on the probe's own thread.
#[cfg(target_os = "linux")]
fn default_collection_unlocked() -> Result<(), String> {
    use secret_service::{EncryptionType, SecretService};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let locked = runtime.block_on(async {
        let service = SecretService::connect(EncryptionType::Dh).await?;
        service.get_default_collection().await?.is_locked().await
    });
    match locked {
        Ok(false) => Ok(()),
        Ok(true) => Err(
            "it is locked (its default collection, where azbroker's entry would go); unlock it, then restart azbrokerd"
                .into(),
        ),
        // No default collection: keyring makes one with the first entry.
        Err(secret_service::Error::NoResult) => Ok(()),
        Err(e) => Err(format!("it failed ({e})")),
    }
}

#[cfg(target_os = "macos")]
fn default_collection_unlocked() -> Result<(), String> {
    Ok(())
}

/// The OS secret store, if it answers within [`PROBE_TIMEOUT`].
fn probe_keyring() -> Result<Backend, String> {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    {
        #[cfg(target_os = "linux")]
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && !std::env::var_os("XDG_RUNTIME_DIR")
                .is_some_and(|dir| Path::new(&dir).join("bus").exists())
        {
            return Err("no D-Bus session bus".into());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("azbroker-keyring-probe".into())
            .spawn(move || {
                let _ = tx.send(
                    keyring_entry().and_then(|entry| match entry.get_password() {
                        Ok(_) => Ok(()),
                        // No entry yet: where the first one would go must
                        // not be locked, or every save would fail later.
                        Err(keyring::Error::NoEntry) => default_collection_unlocked(),
                        Err(e) => Err(keyring_failure(&e)),
                    }),
                );
            })
            .map_err(|e| e.to_string())?;
        match rx.recv_timeout(PROBE_TIMEOUT) {
            Ok(Ok(())) => Ok(Backend::Keyring),
            Ok(Err(why)) => Err(why),
            Err(_) => Err(format!(
                "it did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        Err("not supported on this platform".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::Secret;
    use std::os::unix::fs::PermissionsExt as _;

    fn record(tenant: &str, token: &str) -> AccountRecord {
        AccountRecord {
            key: AccountKey::new("https://login.example", Some(tenant), None),
            username: Some("user@contoso.example".into()),
            home_tenant: None,
            object_id: None,
            refresh_token: Secret::new(token),
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn file_store_round_trips_replaces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/accounts.json");
        let store = Arc::new(Store::file(path.clone()));
        assert!(store.describe().starts_with("file "));
        let a = record("a", "rt-a-1");
        assert_eq!(store.load(&a.key).await.unwrap(), None);
        store.save(a.clone()).await.unwrap();
        store.save(record("b", "rt-b-1")).await.unwrap();
        store.save(record("a", "rt-a-2")).await.unwrap();
        let loaded = store.load(&a.key).await.unwrap().unwrap();
        assert_eq!(loaded.refresh_token.expose(), "rt-a-2");
        assert_eq!(store.keys().await.unwrap().len(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("rt-a-1"),
            "the replaced refresh token is gone"
        );
        assert!(store.remove(&a.key).await.unwrap());
        assert!(!store.remove(&a.key).await.unwrap());
        assert_eq!(store.keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_corrupt_or_future_document_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.json");
        let store = Arc::new(Store::file(path.clone()));
        std::fs::write(&path, "not json").unwrap();
        let key = AccountKey::new("https://x", None, None);
        assert!(store
            .load(&key)
            .await
            .unwrap_err()
            .contains("not an azbroker"));
        std::fs::write(&path, r#"{"version":9,"accounts":[]}"#).unwrap();
        assert!(store.load(&key).await.unwrap_err().contains("version 9"));
    }

    #[tokio::test]
    async fn a_fifo_in_place_of_the_file_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let store = Arc::new(Store::file(path));
        let key = AccountKey::new("https://x", None, None);
        let refused = store.load(&key).await.unwrap_err();
        assert!(
            refused.ends_with("accounts.json: it is a FIFO (named pipe), not a regular file"),
            "{refused}"
        );
    }
}
