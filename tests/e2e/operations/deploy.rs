//! The deployment files: the seccomp profile Docker users run Sluice with is an allow list
//! that lets the three io_uring calls through and still refuses what Docker's default
//! refuses, and Sluice serves under it (loaded with libseccomp, as a runtime loads it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::data_plane::{append_ok, basin_with_stream, bodies, read_records};
use crate::harness::{get, Server};

const IO_URING: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

fn profile() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/seccomp-io_uring.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// The actions of the rules that name `syscall` unconditionally (without argument checks).
fn unconditional_actions(profile: &Value, syscall: &str) -> Vec<String> {
    let rules = profile["syscalls"].as_array().expect("a syscalls array");
    rules
        .iter()
        .filter(|rule| rule.get("args").is_none())
        .filter(|rule| {
            rule["names"]
                .as_array()
                .expect("each rule has names")
                .iter()
                .any(|name| name.as_str() == Some(syscall))
        })
        .map(|rule| {
            rule["action"]
                .as_str()
                .expect("actions are strings")
                .to_owned()
        })
        .collect()
}

/// Whether any rule allows `syscall`, with or without argument checks.
fn ever_allowed(profile: &Value, syscall: &str) -> bool {
    profile["syscalls"]
        .as_array()
        .expect("a syscalls array")
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .any(|rule| {
            rule["names"]
                .as_array()
                .expect("each rule has names")
                .iter()
                .any(|name| name.as_str() == Some(syscall))
        })
}

#[test]
fn the_seccomp_profile_is_an_allow_list_with_io_uring_and_without_the_dangerous_calls() {
    let profile = profile();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(profile["architectures"]
        .as_array()
        .expect("architectures")
        .iter()
        .any(|a| a == "SCMP_ARCH_X86_64"));
    for syscall in IO_URING {
        assert_eq!(
            unconditional_actions(&profile, syscall),
            ["SCMP_ACT_ALLOW"],
            "{syscall}"
        );
    }
    for syscall in ["read", "write", "openat", "fsync", "futex", "epoll_wait"] {
        assert_eq!(
            unconditional_actions(&profile, syscall),
            ["SCMP_ACT_ALLOW"],
            "{syscall}"
        );
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
        assert!(!ever_allowed(&profile, syscall), "{syscall} is allowed");
    }
    // clone is allowed only without namespace flags, and clone3 (whose flags a filter
    // cannot see) answers ENOSYS so that the C library falls back to clone.
    assert!(unconditional_actions(&profile, "clone").is_empty());
    assert!(ever_allowed(&profile, "clone"));
    assert_eq!(
        unconditional_actions(&profile, "clone3"),
        ["SCMP_ACT_ERRNO"]
    );
}

/// The wrapper that installs a Docker-format profile with libseccomp and execs a command.
fn under_profile() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/e2e/seccomp_exec.py");
    let profile = root.join("deploy/seccomp-io_uring.json");
    let probe = Command::new(PYTHON)
        .args(["-c", "import seccomp"])
        .output()
        .expect("run python3");
    assert!(
        probe.status.success(),
        "{PYTHON} cannot import seccomp (Debian's python3-seccomp; `make test` installs it): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    [PYTHON.into(), script, profile]
        .iter()
        .map(|p| p.to_str().expect("utf-8 path").to_owned())
        .collect()
}

/// The system Python, which has Debian's libseccomp bindings (the test venv does not).
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn sluice_serves_under_the_seccomp_profile_and_the_profile_refuses_namespaces() {
    let wrapper = under_profile();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();

    let refused = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .args(["/usr/bin/unshare", "--user", "true"])
        .output()
        .expect("run unshare under the profile");
    assert!(!refused.status.success(), "unshare ran under the profile");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("utf-8 path");
    let mut server = Server::start_under(&wrapper, &["--shards", "2", "--local-root", root], &[]);
    let port = server.port();
    let basin = basin_with_stream(port, "ops-seccomp", "s");
    append_ok(port, &basin, "s", &bodies(&["under seccomp"]));
    let records = read_records(port, &basin, "s", "seq_num=0");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["body"], "under seccomp");
    get(port, "/metrics").expect_status(200);
    let status = server.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
