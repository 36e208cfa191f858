//! Start-up where io_uring cannot be used: the server exits at once with one line that
//! names the cause and the fix, never a panic or a hang. The two causes this machine can
//! produce: a locked-memory limit below what the shards need, and a seccomp filter that
//! refuses `io_uring_setup` the way Docker's default profile does.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What glommio needs of `RLIMIT_MEMLOCK` (`executors::MEMLOCK_NEEDED`).
const MEMLOCK_NEEDED: u64 = 512 << 10;
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// The sluice command, with `setup` applied in the child before exec.
fn sluice(setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the hook only makes async-signal-safe system calls (setrlimit, prctl).
    unsafe { command.pre_exec(setup) };
    command
}

/// Runs sluice with `setup` applied in the child before exec; waits for it to exit.
fn run_sluice(setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static) -> Output {
    let started = Instant::now();
    let output = sluice(setup).output().expect("run sluice");
    assert!(
        started.elapsed() < EXIT_WITHIN,
        "sluice took {:?} to give up",
        started.elapsed()
    );
    output
}

/// The one line sluice ends with, after checking it failed cleanly.
fn failure_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "a panic, not an error:\n{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("S2_ACCOUNT_ENDPOINT"),
        "announced itself although it cannot serve"
    );
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("sluice: "), "stderr:\n{stderr}");
    last
}

fn memlock(limit: u64) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    move || {
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlimit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[test]
fn a_locked_memory_limit_below_the_need_is_one_clear_line() {
    let line = failure_line(&run_sluice(memlock(MEMLOCK_NEEDED - 1)));
    assert!(line.contains("locked memory"), "{line}");
    assert!(
        line.contains(&format!("the limit is {}", MEMLOCK_NEEDED - 1)),
        "{line}"
    );
    assert!(line.contains("--ulimit memlock=-1"), "{line}");
}

#[test]
fn a_locked_memory_limit_at_the_need_starts() {
    let mut child = sluice(memlock(MEMLOCK_NEEDED))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("read stdout");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("export S2_ACCOUNT_ENDPOINT="),
        "no endpoint line: {first:?}"
    );
}

/// A seccomp filter that fails `io_uring_setup` with EPERM and allows everything else.
#[cfg(target_arch = "x86_64")]
fn refuse_io_uring() -> std::io::Result<()> {
    const IO_URING_SETUP: u32 = 425;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        // Load the syscall number (offset 0 of struct seccomp_data).
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl reads the filter program, which outlives the calls.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_seccomp_profile_that_blocks_io_uring_is_one_clear_line() {
    let line = failure_line(&run_sluice(refuse_io_uring));
    assert!(line.contains("io_uring is not permitted"), "{line}");
    assert!(line.contains("deploy/seccomp-io_uring.json"), "{line}");
}
