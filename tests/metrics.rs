//! Black-box tests of the operator routes: `/metrics` (Prometheus text),
//! `/stats.json`, who may read them, and `metrics_listen`.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};

use common::{Announce, Tracker, escape, get, id, wait_until};

/// The samples of a Prometheus text page: `series{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn metrics(addr: SocketAddr) -> HashMap<String, f64> {
    let response = get(addr, "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    samples(&String::from_utf8(response.body).unwrap())
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

fn metrics_count_requests_by_result_family_and_reason() {
    let tracker = Tracker::start(&[]);
    tracker.announce(&Announce::new(id(1), 1).seeder());
    tracker.announce(&Announce::new(id(1), 2));
    tracker.announce(&Announce::new(id(2), 3));
    tracker.announce_v6(&Announce::new(id(1), 4));
    let missing = get(tracker.v4, "/announce?port=1");
    assert!(missing.failure().is_some());
    let bad_port = Announce::new(id(1), 5).port(0);
    assert!(get(tracker.v4, &bad_port.target()).failure().is_some());
    let scrape = format!("/scrape?info_hash={}", escape(&id(1)));
    assert_eq!(get(tracker.v6, &scrape).status, 200);
    assert_eq!(get(tracker.v4, "/nowhere").status, 404);

    common::let_totals_settle();
    let m = metrics(tracker.v4);
    let series = |name: &str, result: &str, family: &str| {
        value(
            &m,
            &format!("{name}{{result=\"{result}\",family=\"{family}\"}}"),
        )
    };
    assert_eq!(series("shoal_announces_total", "ok", "ipv4"), 3.0);
    assert_eq!(series("shoal_announces_total", "ok", "ipv6"), 1.0);
    assert_eq!(series("shoal_announces_total", "failure", "ipv4"), 2.0);
    assert_eq!(series("shoal_announces_total", "failure", "ipv6"), 0.0);
    assert_eq!(series("shoal_scrapes_total", "ok", "ipv6"), 1.0);
    assert_eq!(series("shoal_scrapes_total", "ok", "ipv4"), 0.0);
    let reason = |r: &str| value(&m, &format!("shoal_failures_total{{reason=\"{r}\"}}"));
    assert_eq!(reason("missing_parameter"), 1.0);
    assert_eq!(reason("bad_port"), 1.0);
    assert_eq!(reason("not_found"), 1.0);
    assert_eq!(reason("swarm_full"), 0.0);
    assert_eq!(value(&m, "shoal_torrents"), 2.0);
    assert_eq!(value(&m, "shoal_seeders{family=\"ipv4\"}"), 1.0);
    assert_eq!(value(&m, "shoal_leechers{family=\"ipv4\"}"), 2.0);
    assert_eq!(value(&m, "shoal_leechers{family=\"ipv6\"}"), 1.0);
    // Every request before this one was timed (this one is timed after it
    // is rendered).
    assert_eq!(value(&m, "shoal_request_duration_seconds_count"), 8.0);
    assert_eq!(
        value(&m, "shoal_request_duration_seconds_bucket{le=\"+Inf\"}"),
        8.0
    );
    assert!(value(&m, "shoal_connections_accepted_total") >= 9.0);
    let build = format!(
        "shoal_build_info{{version=\"{}\",reactor=\"{}\",workers=\"2\"}}",
        env!("CARGO_PKG_VERSION"),
        common::reactor()
    );
    assert_eq!(value(&m, &build), 1.0);
}

/// The exposition is parsed by the Prometheus project's own Python parser,
/// when it is installed (CI installs it).
fn metrics_page_parses_with_the_reference_parser() {
    let tracker = Tracker::start(&[]);
    tracker.announce(&Announce::new(id(1), 1));
    let text = String::from_utf8(get(tracker.v4, "/metrics").body).unwrap();
    let check = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}\n\
        h = families['shoal_request_duration_seconds']\n\
        assert h.type == 'histogram', h.type\n\
        assert families['shoal_announces'].type == 'counter'\n\
        print(len(families))\n";
    let python = "/usr/bin/python3";
    let has_parser = std::process::Command::new(python)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_parser {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-prometheus-client is missing in CI"
        );
        eprintln!("skipping: python3-prometheus-client is not installed");
        return;
    }
    let mut child = std::process::Command::new(python)
        .args(["-c", check])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(families >= 15, "{families} families");
}

fn open_connections_are_counted() {
    let tracker = Tracker::start(&[]);
    let kept: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(tracker.v4).unwrap())
        .collect();
    // The three kept connections plus the one asking.
    wait_until("4 open connections", || {
        value(&metrics(tracker.v4), "shoal_connections_open") == 4.0
    });
    drop(kept);
    wait_until("1 open connection", || {
        value(&metrics(tracker.v4), "shoal_connections_open") == 1.0
    });
}

fn expired_peers_and_snapshots_are_reported() {
    if common::memory_only("the expiry sweep and the state file") {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "shoal-metrics-{}-{}",
        std::process::id(),
        common::run_name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.bin");
    let tracker = Tracker::start(&[
        "--peer-ttl",
        "1",
        "--state-file",
        state.to_str().unwrap(),
        "--snapshot-interval",
        "1",
    ]);
    tracker.announce(&Announce::new(id(1), 1));
    tracker.announce(&Announce::new(id(1), 2));
    // Store-wide gauges may lag by up to a second (they are cached).
    wait_until("2 expired peers and no torrent", || {
        let m = metrics(tracker.v4);
        value(&m, "shoal_peers_expired_total") == 2.0 && value(&m, "shoal_torrents") == 0.0
    });
    let m = metrics(tracker.v4);
    assert!(value(&m, "shoal_snapshot_age_seconds") < 5.0);
    assert!(value(&m, "shoal_snapshot_duration_seconds") >= 0.0);
    assert_eq!(value(&m, "shoal_snapshot_failures_total"), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn stats_json_reports_the_swarms_and_the_reactor() {
    let tracker = Tracker::start(&[]);
    tracker.announce(&Announce::new(id(7), 1).seeder());
    tracker.announce(&Announce::new(id(7), 2));
    tracker.announce_v6(&Announce::new(id(7), 3));
    tracker.announce(&Announce::new(id(8), 4).seeder().event("completed"));
    common::let_totals_settle();
    let response = get(tracker.v6, "/stats.json");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let stats: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(stats["torrents"], 2);
    assert_eq!(stats["peers"]["ipv4"], 3);
    assert_eq!(stats["peers"]["ipv6"], 1);
    assert_eq!(stats["peers"]["total"], 4);
    assert_eq!(stats["seeders"], 2);
    assert_eq!(stats["leechers"], 2);
    assert_eq!(stats["downloads"], 1);
    assert_eq!(stats["requests"]["announces"], 4);
    assert_eq!(stats["reactor"], common::reactor());
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(stats["full_scrape"], false);
    assert_eq!(stats["store"]["backend"], common::store());
    assert_eq!(stats["store"]["totals_known"], true);
    assert!(stats["requests_per_second"]["announces"].as_f64().unwrap() > 0.0);
    let top = stats["top_torrents"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["info_hash"], "07".repeat(20));
    assert_eq!(top[0]["seeders"], 1);
    assert_eq!(top[0]["leechers"], 2);
    assert!(!stats["history"].as_array().unwrap().is_empty());
}

fn stats_are_served_only_to_allowed_networks() {
    // Defaults: loopback only; here only IPv6 loopback.
    let tracker = Tracker::start(&["--stats-allow", "::1/128"]);
    for path in ["/metrics", "/stats.json", "/stats"] {
        let refused = get(tracker.v4, path);
        assert_eq!(refused.status, 403, "{path}");
        let text = String::from_utf8(refused.body).unwrap();
        assert!(text.contains("127.0.0.1 is not in stats_allow"), "{text}");
        assert_eq!(get(tracker.v6, path).status, 200, "{path}");
    }
    let m = metrics(tracker.v6);
    assert_eq!(value(&m, "shoal_failures_total{reason=\"forbidden\"}"), 3.0);
    // Tracker routes are not affected.
    assert!(
        tracker
            .announce(&Announce::new(id(1), 1))
            .failure()
            .is_none()
    );
}

fn metrics_listen_separates_operator_and_tracker_routes() {
    // A wildcard address: connections arrive on 127.0.0.1, not 0.0.0.0,
    // and must still be recognised as the metrics listener's.
    let tracker = Tracker::start(&["--metrics-listen", "0.0.0.0:0"]);
    let bound = tracker.logged_addr("metrics on http://");
    assert!(bound.ip().is_unspecified());
    let admin = SocketAddr::from(([127, 0, 0, 1], bound.port()));
    assert_ne!(admin, tracker.v4);
    tracker.announce(&Announce::new(id(1), 1));
    common::let_totals_settle();
    let m = metrics(admin);
    assert_eq!(value(&m, "shoal_torrents"), 1.0);
    assert_eq!(get(admin, "/stats").status, 200);
    let announce = get(admin, &Announce::new(id(1), 2).target());
    assert_eq!(announce.status, 404);
    assert_eq!(
        announce.failure().as_deref(),
        Some("not found: this listener serves /metrics, /stats and /stats.json")
    );
    let elsewhere = get(tracker.v4, "/metrics");
    assert_eq!(elsewhere.status, 404);
    assert!(elsewhere.failure().unwrap().starts_with("not found"));
}

fn stats_page_is_self_contained_html() {
    let tracker = Tracker::start(&[]);
    let page = get(tracker.v4, "/stats");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("fetch(\"stats.json\""));
    for external in ["src=\"http", "href=\"http", "@import", "//cdn"] {
        assert!(!html.contains(external), "loads {external}");
    }
    assert_eq!(
        get(tracker.v4, "/stats").header("cache-control"),
        Some("no-store")
    );
}

reactor_tests!(
    metrics_count_requests_by_result_family_and_reason,
    metrics_page_parses_with_the_reference_parser,
    open_connections_are_counted,
    expired_peers_and_snapshots_are_reported,
    stats_json_reports_the_swarms_and_the_reactor,
    stats_are_served_only_to_allowed_networks,
    metrics_listen_separates_operator_and_tracker_routes,
    stats_page_is_self_contained_html,
);
