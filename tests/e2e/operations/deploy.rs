//! The deployment files: the seccomp profile Docker users run Sluice with is valid, lets
//! the three io_uring calls through, and still refuses what Docker's default refuses.

use std::path::PathBuf;

use serde_json::Value;

const IO_URING: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

fn profile() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/seccomp-io_uring.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// The action the profile gives `syscall`: its rule's, or the default.
fn action(profile: &Value, syscall: &str) -> String {
    let rules = profile["syscalls"].as_array().expect("a syscalls array");
    let matching: Vec<&Value> = rules
        .iter()
        .filter(|rule| {
            rule["names"]
                .as_array()
                .expect("each rule has names")
                .iter()
                .any(|name| name.as_str() == Some(syscall))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{syscall} is in {} rules",
        matching.len()
    );
    let action = match matching.first() {
        Some(rule) => &rule["action"],
        None => &profile["defaultAction"],
    };
    action.as_str().expect("actions are strings").to_owned()
}

#[test]
fn the_seccomp_profile_allows_io_uring_and_refuses_the_dangerous_calls() {
    let profile = profile();
    assert!(profile["architectures"]
        .as_array()
        .expect("architectures")
        .iter()
        .any(|a| a == "SCMP_ARCH_X86_64"));
    for syscall in IO_URING {
        assert_eq!(action(&profile, syscall), "SCMP_ACT_ALLOW", "{syscall}");
    }
    for syscall in [
        "ptrace",
        "mount",
        "kexec_load",
        "bpf",
        "unshare",
        "setns",
        "reboot",
    ] {
        assert_eq!(action(&profile, syscall), "SCMP_ACT_ERRNO", "{syscall}");
    }
}
