//! `/dashboard` in a real browser: headless Chromium (Debian's package, which `make test`
//! installs) loads the page for a stream the test created and appended to, and the DOM
//! shows the server, the basin, the stream and its records, including ones appended while
//! the page was open (it tails live). A screenshot is kept as a test artifact.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::data_plane::{append_ok, basin_with_stream, bodies};
use serde_json::json;

use crate::harness::{get, http_json, Server};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(args: &[&str], profile: &str) -> Command {
    assert!(
        PathBuf::from(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `make test`, which installs Debian's chromium"
    );
    let mut command = Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,800",
        ])
        .arg(format!("--user-data-dir={profile}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

fn finished(output: Output) -> Output {
    assert!(
        output.status.success(),
        "chromium failed: {}",
        output.status
    );
    output
}

#[test]
fn the_dashboard_shows_a_stream_and_tails_its_records_in_a_browser() {
    let server = Server::start(&["--shards", "2"]);
    let port = server.port();
    let page = get(port, "/dashboard");
    page.expect_status(200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    let basin = basin_with_stream(port, "ops-dash", "events");
    for i in 0..3 {
        append_ok(
            port,
            &basin,
            "events",
            &bodies(&[&format!("dash-record-{i}")]),
        );
    }
    let url = format!("http://127.0.0.1:{port}/dashboard#basin={basin}&stream=events");
    let profiles = tempfile::tempdir().expect("temp dir");
    let profile = |name: &str| profiles.path().join(name).display().to_string();

    // A writer keeps appending while the page is open; the page must show some of it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, basin) = (stop.clone(), basin.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                append_ok(
                    port,
                    &basin,
                    "events",
                    &bodies(&[&format!("dash-live-{n}")]),
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let output = chromium(
        &["--virtual-time-budget=30000", "--dump-dom", &url],
        &profile("dom"),
    )
    .output()
    .expect("chromium");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer");
    let dom = String::from_utf8(finished(output).stdout).expect("the DOM is UTF-8");
    let since = dom
        .split("id=\"since\">+")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no \"since opened\" count in the page:\n{dom}"));
    assert!(since >= 1, "the page did not tail: +{since} since opened");
    for expected in [
        basin.as_str(),
        "events",
        // The latest 20 records: by now, the writer's.
        "dash-live-",
        concat!("v", env!("CARGO_PKG_VERSION")),
        "in memory",
    ] {
        assert!(
            dom.contains(expected),
            "the page does not show {expected:?}:\n{dom}"
        );
    }

    // Browsing from a seq_num (the address keeps it) shows that page, not the tail.
    let page_url = format!("{url}&from=0");
    let output = chromium(
        &["--virtual-time-budget=5000", "--dump-dom", &page_url],
        &profile("page"),
    )
    .output()
    .expect("chromium");
    let dom = String::from_utf8(finished(output).stdout).expect("the DOM is UTF-8");
    for expected in ["Records from seq_num 0", "dash-record-0", "dash-record-2"] {
        assert!(
            dom.contains(expected),
            "the page does not show {expected:?}:\n{dom}"
        );
    }

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact directory");
    let shot = artifacts.join("dashboard.png");
    let screenshot = format!("--screenshot={}", shot.display());
    finished(
        chromium(
            &["--virtual-time-budget=5000", &screenshot, &url],
            &profile("shot"),
        )
        .output()
        .expect("chromium"),
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());
}

#[test]
fn with_enforcement_on_the_dashboard_asks_for_a_token_and_uses_it() {
    const ROOT: &str = "dashboard-root-token";
    let server = Server::start(&["--shards", "2", "--root-token", ROOT]);
    let port = server.port();
    let auth = ("Authorization", "Bearer dashboard-root-token");
    let basin = crate::harness::unique_basin("ops-dash-auth");
    http_json(
        port,
        "POST",
        "/v1/basins",
        &[auth],
        &json!({ "basin": basin }),
    )
    .expect_status(201);
    http_json(
        port,
        "POST",
        "/v1/streams",
        &[auth, ("S2-Basin", &basin)],
        &json!({ "stream": "events" }),
    )
    .expect_status(201);
    http_json(
        port,
        "POST",
        "/v1/streams/events/records",
        &[auth, ("S2-Basin", &basin)],
        &json!({ "records": [{ "body": "secured-record-0" }] }),
    )
    .expect_status(200);
    let profiles = tempfile::tempdir().expect("temp dir");
    let profile = |name: &str| profiles.path().join(name).display().to_string();
    let dom = |url: &str, name: &str| {
        let output = chromium(
            &["--virtual-time-budget=5000", "--dump-dom", url],
            &profile(name),
        )
        .output()
        .expect("chromium");
        String::from_utf8(finished(output).stdout).expect("the DOM is UTF-8")
    };

    // Without a token: the sign-in form shows, and nothing of the server's contents.
    let page = format!("http://127.0.0.1:{port}/dashboard#basin={basin}&stream=events");
    let without = dom(&page, "without");
    assert!(
        without.contains(r#"<form id="auth">"#)
            && without.contains("This server needs an access token"),
        "the page does not ask for a token:\n{without}"
    );
    assert!(
        !without.contains("secured-record-0"),
        "records shown without a token:\n{without}"
    );

    // With one (given in the address, which the page removes from it), the stream shows.
    let with = dom(&format!("{page}&token={ROOT}"), "with");
    assert!(
        with.contains(r#"<form id="auth" hidden="">"#),
        "the sign-in form still shows:\n{with}"
    );
    for expected in [basin.as_str(), "secured-record-0", "in memory"] {
        assert!(
            with.contains(expected),
            "the page does not show {expected:?}:\n{with}"
        );
    }
}

#[test]
fn no_dashboard_by_flag_or_environment_answers_not_found_and_serves_the_api() {
    let by_flag = Server::start(&["--no-dashboard"]);
    let by_env = Server::start_with_env(&[], &[("SLUICE_NO_DASHBOARD", "true")]);
    for server in [&by_flag, &by_env] {
        let port = server.port();
        for path in ["/dashboard", "/dashboard/server"] {
            let reply = get(port, path);
            reply.expect_status(404);
            assert!(
                !reply.text().contains("<html"),
                "{path} still serves the page: {}",
                reply.text()
            );
        }
        get(port, "/v1/basins").expect_status(200);
    }
    let with = Server::start(&[]);
    get(with.port(), "/dashboard").expect_status(200);
    get(with.port(), "/dashboard/server").expect_status(200);
}
