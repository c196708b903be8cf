//! The `/stats` page in a real browser: headless Chromium loads it from a
//! running tracker, its script fetches `stats.json` and fills in the live
//! figures, and nothing is logged to the console (no script error, no
//! blocked resource: the page's CSP forbids anything external).

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{Announce, Tracker, id};

/// The first Chromium binary on this machine, if any.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The text of the element with `id` in `dom`.
fn text_of<'d>(dom: &'d str, id: &str) -> &'d str {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let after = &dom[start..];
    let open_end = after.find('>').unwrap() + 1;
    let close = after[open_end..].find('<').unwrap();
    &after[open_end..open_end + close]
}

fn stats_page_renders_live_figures_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing in CI (apt-get install chromium)"
        );
        eprintln!("skipping: no chromium on this machine");
        return;
    };
    let tracker = Tracker::start(&[]);
    tracker.announce(&Announce::new(id(0xab), 1).seeder());
    tracker.announce(&Announce::new(id(0xab), 2));
    tracker.announce(&Announce::new(id(0xab), 3));
    tracker.announce_v6(&Announce::new(id(0x12), 4));
    // UDP beside HTTP: a scrape, and a stop of a peer that is not there
    // (counted, changes no swarm).
    let udp = common::udp::UdpClient::new(tracker.v4);
    udp.scrape(&[id(0xab)]);
    udp.announce(&common::udp::UdpAnnounce::new(id(0x12), 9).event(3));
    common::let_totals_settle();

    let profile = std::env::temp_dir().join(format!(
        "shoal-chromium-{}-{}",
        std::process::id(),
        common::run_name()
    ));
    let url = format!("http://{}/stats", tracker.v4);
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=11000",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Bounded: a hung browser fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chromium failed:\n{log}");

    // The script ran, fetched stats.json and filled the page in.
    let updates: u32 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-updates in\n{dom}"));
    // 11 s of the page's (virtual) time: the first load and two refreshes.
    assert!(
        updates >= 2,
        "the page did not refresh itself ({updates} loads):\n{dom}"
    );
    assert!(dom.contains("data-errors=\"\""), "script errors:\n{dom}");
    assert_eq!(text_of(&dom, "torrents"), "2");
    assert_eq!(text_of(&dom, "peers"), "4");
    assert_eq!(text_of(&dom, "peers-v6"), "1");
    assert_eq!(text_of(&dom, "seeders"), "1");
    assert_eq!(text_of(&dom, "leechers"), "3");
    assert_eq!(text_of(&dom, "announces"), "5");
    assert_eq!(text_of(&dom, "announces-http"), "4");
    assert_eq!(text_of(&dom, "announces-udp"), "1");
    assert_eq!(text_of(&dom, "scrapes-udp"), "1");
    assert!(
        text_of(&dom, "reactor").starts_with(common::reactor()),
        "{}",
        text_of(&dom, "reactor")
    );
    // The largest swarm heads the table.
    let first_row = dom.split("<tbody id=\"top\">").nth(1).unwrap();
    assert!(
        first_row.starts_with(&format!(
            "<tr><td>{}</td><td>1</td><td>2</td>",
            "ab".repeat(20)
        )),
        "{first_row}"
    );
    assert!(text_of(&dom, "status").starts_with("updated "));
    // The chart has its lines once there are two samples; with one, it says so.
    assert!(dom.contains("id=\"line-announces\""));
    // Nothing reached the console: no error, no CSP violation.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console output:\n{}",
        console.join("\n")
    );
}

reactor_tests!(stats_page_renders_live_figures_in_chromium);
