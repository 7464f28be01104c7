//! Configuration from the environment follows one rule everywhere: a value
//! that is neither unset nor valid is an error naming the variable, never
//! silently taken as "off".

use crate::harness::Sandbox;

#[test]
fn a_junk_boolean_or_cloud_is_an_error_naming_the_variable() {
    let mut sandbox = Sandbox::new();
    for (variable, value) in [
        ("AZBROKER_NO_AUTOSTART", "yes"),
        ("AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS", "on"),
        ("AZURE_CLOUD", "Mars"),
    ] {
        sandbox.set(variable, value);
        let out = sandbox.cli(&["token", "--scope", "https://management.azure.com/.default"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{variable}: {stderr}");
        assert!(
            stderr.contains(&format!("{variable}=\"{value}\"")),
            "{variable}: {stderr}"
        );
        // Nothing was started on a misread switch.
        assert!(sandbox.daemon_pids().is_empty(), "{variable}");
        sandbox.unset(variable);
    }
    // The same rule in the daemon.
    sandbox.set("AZBROKER_MANAGED_IDENTITY", "maybe");
    let out = sandbox
        .command("azbrokerd")
        .args(["--foreground", "--socket"])
        .arg(&sandbox.socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("AZBROKER_MANAGED_IDENTITY=\"maybe\" is not a boolean"),
        "{stderr}"
    );
}
