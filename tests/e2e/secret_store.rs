//! Refresh tokens in a real Secret Service: Debian's `gnome-keyring` on a
//! private D-Bus session bus, unlocked (or locked, or killed) by the test.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{wait_until, Sandbox};
use crate::login_support::{
    accounts_file, grants, login_sandbox, refresh_tokens_in, TestBrowser, ARM, STORAGE,
};

const KEYRING_PASSWORD: &str = "e2e-keyring-password";

/// A program the Secret Service tests need, or a panic naming its Debian package.
fn program(name: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing: install the Debian package {package} \
                 (scripts/setup-tests does when run as root)"
            )
        })
}

/// A session bus of the sandbox's own, and `gnome-keyring-daemon` on it
/// serving the Secret Service. The bus activates nothing: a stopped keyring
/// stays gone, and a locked one cannot ask anybody for its password.
struct SecretService {
    dir: PathBuf,
    address: String,
    bus: Child,
    keyring: Option<Child>,
}

impl SecretService {
    /// Starts the bus, points the sandbox at it, and starts an unlocked keyring.
    fn start(sandbox: &mut Sandbox) -> SecretService {
        let dir = sandbox.dir.path().join("secret-service");
        std::fs::create_dir_all(dir.join("runtime")).unwrap();
        std::fs::set_permissions(
            dir.join("runtime"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.join("bus").display()
            ),
        )
        .unwrap();
        let mut bus = Command::new(program("dbus-daemon", "dbus-daemon"))
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon said {address:?}");
        sandbox.set("DBUS_SESSION_BUS_ADDRESS", &address);
        let mut service = SecretService {
            dir,
            address,
            bus,
            keyring: None,
        };
        service.start_keyring(sandbox);
        service
    }

    /// Starts `gnome-keyring-daemon`, which creates (or opens) the login
    /// keyring with the password it reads on stdin, unlocked.
    fn start_keyring(&mut self, sandbox: &Sandbox) {
        assert!(self.keyring.is_none(), "the keyring runs already");
        let mut keyring = sandbox
            .command_for(program("gnome-keyring-daemon", "gnome-keyring"))
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("XDG_RUNTIME_DIR", self.dir.join("runtime"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        // The password ends at end of input.
        let mut stdin = keyring.stdin.take().unwrap();
        stdin.write_all(KEYRING_PASSWORD.as_bytes()).unwrap();
        drop(stdin);
        self.keyring = Some(keyring);
        wait_until(
            Duration::from_secs(10),
            "gnome-keyring-daemon to serve the Secret Service",
            || self.secret_service_owned(),
        );
    }

    /// Kills the keyring: the Secret Service vanishes from the bus.
    fn stop_keyring(&mut self) {
        let mut keyring = self.keyring.take().expect("the keyring runs");
        let _ = keyring.kill();
        let _ = keyring.wait();
        wait_until(
            Duration::from_secs(10),
            "the Secret Service to leave the bus",
            || !self.secret_service_owned(),
        );
    }

    /// Locks the login keyring (its password is needed to open it again).
    fn lock(&self) {
        let out = self.dbus_send(&[
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ]);
        assert!(out.contains("collection/login"), "{out}");
    }

    fn secret_service_owned(&self) -> bool {
        self.dbus_send(&[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            "string:org.freedesktop.secrets",
        ])
        .contains("boolean true")
    }

    fn dbus_send(&self, args: &[&str]) -> String {
        let out = Command::new(program("dbus-send", "dbus-bin"))
            .arg(format!("--bus={}", self.address))
            .args(["--print-reply", "--reply-timeout=5000"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run dbus-send");
        assert!(
            out.status.success(),
            "dbus-send {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The refresh tokens of the daemon's Secret Service item (none without one).
    fn refresh_tokens(&self) -> Vec<String> {
        let out = Command::new(program("secret-tool", "libsecret-tools"))
            .args(["lookup", "service", "azbroker", "username", "accounts"])
            .env_clear()
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .expect("run secret-tool");
        if out.stdout.is_empty() {
            return Vec::new();
        }
        refresh_tokens_in(&String::from_utf8(out.stdout).unwrap())
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        if let Some(keyring) = &mut self.keyring {
            let _ = keyring.kill();
            let _ = keyring.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn store_of(sandbox: &Sandbox) -> String {
    sandbox.status()["store"].as_str().unwrap().to_string()
}

fn restart(sandbox: &mut Sandbox) {
    assert!(sandbox.cli(&["stop"]).status.success());
    wait_until(Duration::from_secs(10), "the daemon to stop", || {
        sandbox.daemon_pids().is_empty()
    });
    sandbox.start_daemon();
}

#[test]
fn a_login_is_kept_in_the_secret_service_across_a_restart() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    let secrets = SecretService::start(&mut sandbox);
    sandbox.start_daemon();
    let first = sandbox.token(ARM, &[]);
    assert_eq!(browser.invocations(), 1);

    assert_eq!(store_of(&sandbox), "keyring (Secret Service)");
    assert!(
        !accounts_file(&sandbox).exists(),
        "the refresh token also went to the file"
    );
    let before = secrets.refresh_tokens();
    assert_eq!(before.len(), 1, "the Secret Service holds no login");
    let shown = serde_json::to_string(&sandbox.status()).unwrap() + &sandbox.log();
    assert!(
        !shown.contains(&before[0]),
        "the refresh token reached status or the log"
    );

    restart(&mut sandbox);
    let second = sandbox.token(STORAGE, &[]);
    assert_eq!(second["credential"], "InteractiveBrowserCredential");
    assert_ne!(second["accessToken"], first["accessToken"]);
    assert_eq!(
        browser.invocations(),
        1,
        "the restart asked the user to log in again"
    );
    assert_eq!(grants(&entra), ["authorization_code", "refresh_token"]);
    assert_eq!(entra.refresh_token_reuses(), 0);
    let after = secrets.refresh_tokens();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the rotated refresh token was not persisted");
    assert!(!accounts_file(&sandbox).exists());
}

#[test]
fn a_login_in_the_file_moves_into_the_secret_service_once_it_is_reachable() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    // No session bus yet: the 0600 file.
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);
    let file = accounts_file(&sandbox);
    let in_file = refresh_tokens_in(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(in_file.len(), 1);
    let store = store_of(&sandbox);
    assert!(
        store.starts_with(&format!("file {} (no OS secret store: ", file.display())),
        "{store}"
    );

    assert!(sandbox.cli(&["stop"]).status.success());
    wait_until(Duration::from_secs(10), "the daemon to stop", || {
        sandbox.daemon_pids().is_empty()
    });
    let secrets = SecretService::start(&mut sandbox);
    sandbox.start_daemon();

    assert_eq!(
        store_of(&sandbox),
        format!(
            "keyring (Secret Service) (moved 1 login(s) here from {}, which holds none now)",
            file.display()
        )
    );
    assert!(!file.exists(), "the file still holds the refresh token");
    assert_eq!(secrets.refresh_tokens(), in_file);
    // The moved login serves the next token: no second browser login.
    sandbox.token(STORAGE, &[]);
    assert_eq!(browser.invocations(), 1);
    assert_eq!(grants(&entra), ["authorization_code", "refresh_token"]);
    assert_eq!(secrets.refresh_tokens().len(), 1);
    assert_ne!(secrets.refresh_tokens(), in_file);
}

#[test]
fn a_locked_secret_service_without_an_azbroker_entry_is_not_chosen() {
    let (mut sandbox, _entra) = login_sandbox();
    let _browser = TestBrowser::install(&mut sandbox);
    let secrets = SecretService::start(&mut sandbox);
    secrets.lock();
    sandbox.start_daemon();
    let file = accounts_file(&sandbox);
    let store = store_of(&sandbox);
    assert!(
        store.starts_with(&format!("file {} (no OS secret store: ", file.display()))
            && store.contains("locked"),
        "{store}"
    );
    // A login is kept in the file, not lost to a store that refuses saves.
    sandbox.token(ARM, &[]);
    let in_file = refresh_tokens_in(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(in_file.len(), 1);
    drop(secrets);
}

#[test]
fn a_locked_secret_service_falls_back_to_the_file_and_loses_nothing() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    let mut secrets = SecretService::start(&mut sandbox);
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);
    let in_keyring = secrets.refresh_tokens();
    assert_eq!(in_keyring.len(), 1);

    assert!(sandbox.cli(&["stop"]).status.success());
    wait_until(Duration::from_secs(10), "the daemon to stop", || {
        sandbox.daemon_pids().is_empty()
    });
    secrets.lock();
    sandbox.start_daemon();
    let file = accounts_file(&sandbox);
    let store = store_of(&sandbox);
    assert!(
        store.starts_with(&format!("file {} (no OS secret store: ", file.display())),
        "{store}"
    );
    assert!(
        store.contains("locked"),
        "the message does not say why: {store}"
    );
    assert!(sandbox.log().contains(&store), "{}", sandbox.log());

    // The locked keyring's login cannot be read: a new one goes to the file.
    sandbox.token(STORAGE, &[]);
    assert_eq!(browser.invocations(), 2);
    let in_file = refresh_tokens_in(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(in_file.len(), 1);

    // Unlocked again: the newer login of the file replaces the keyring's.
    assert!(sandbox.cli(&["stop"]).status.success());
    wait_until(Duration::from_secs(10), "the daemon to stop", || {
        sandbox.daemon_pids().is_empty()
    });
    secrets.stop_keyring();
    secrets.start_keyring(&sandbox);
    assert_eq!(
        secrets.refresh_tokens(),
        in_keyring,
        "the keyring lost its login"
    );
    sandbox.start_daemon();
    assert!(store_of(&sandbox).starts_with("keyring (Secret Service) (moved 1 login(s)"));
    assert!(!file.exists());
    assert_eq!(secrets.refresh_tokens(), in_file);
    // A fresh daemon has no cached token: this one comes from the moved login.
    sandbox.token(ARM, &[]);
    assert_eq!(browser.invocations(), 2);
    assert_eq!(entra.refresh_token_reuses(), 0);
}

#[test]
fn a_secret_service_that_vanishes_keeps_the_login_in_memory_not_on_disk() {
    let (mut sandbox, _entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    let mut secrets = SecretService::start(&mut sandbox);
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);
    assert_eq!(secrets.refresh_tokens().len(), 1);

    secrets.stop_keyring();
    // The refresh grant's rotated token cannot be persisted.
    sandbox.token(STORAGE, &[]);
    assert_eq!(browser.invocations(), 1);
    let log = sandbox.log();
    assert!(
        log.contains("cannot persist the refresh token") && log.contains("OS secret store"),
        "{log}"
    );
    assert!(
        !accounts_file(&sandbox).exists(),
        "the refresh token went to the file instead"
    );
    // The daemon still holds it: the next new scope needs no login either.
    sandbox.token("https://vault.azure.net/.default", &[]);
    assert_eq!(browser.invocations(), 1);
    assert!(
        !sandbox.daemon_pids().is_empty(),
        "the daemon exited with an unsaved login"
    );
}
