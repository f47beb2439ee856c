//! A real Prometheus (Debian's `prometheus` package, installed by `.ci/run`)
//! scrapes sluice under a small mixed load: `promtool check metrics` finds
//! nothing wrong with `/metrics`, and every panel query of every Grafana
//! dashboard in `dashboards/grafana/` returns data.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const CARD_PROMPT: &str = "Charge my card 4111 1111 1111 1111 for the order";
const SECRET_PROMPT: &str = "why does this fail? AKIAIOSFODNN7EXAMPLE is my key";

fn tool(name: &str) -> PathBuf {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(!path.is_empty(), "`{name}` is not installed: apt-get install prometheus (.ci/run does)");
    PathBuf::from(path)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every `targets[].expr` of every panel (rows' nested panels included).
fn panel_exprs(dashboard: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_string()));
            }
        }
        panel_exprs(panel, out);
    }
}

/// Fill in Grafana's variables the way a dashboard left at its defaults does.
fn substitute(expr: &str) -> String {
    expr.replace("${team}", ".*")
        .replace("$team", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1m")
}

async fn query(client: &reqwest::Client, base: &str, expr: &str) -> serde_json::Value {
    let resp = client.post(format!("{base}/api/v1/query")).form(&[("query", expr)]).send().await.unwrap();
    resp.json().await.unwrap()
}

#[tokio::test]
async fn prometheus_scrapes_sluice_and_every_dashboard_panel_has_data() {
    let prometheus = tool("prometheus");
    let promtool = tool("promtool");
    let fake = FakeProvider::start().await;
    let proc = SluiceProc::start(&fake, Setup::default()).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // Before any traffic the dashboards' series already exist.
    let fresh = http.get(format!("http://{}/metrics", proc.admin)).send().await.unwrap().text().await.unwrap();
    for series in
        ["sluice_build_info{", "sluice_requests_total{", "sluice_proxy_connects_total{", "sluice_local_queue_depth"]
    {
        assert!(fresh.contains(series), "{series} missing before traffic:\n{fresh}");
    }

    // A small mixed load: clean prompts to the cloud, a card number (kept
    // local; no local model here), a secret (blocked), one through the proxy.
    for i in 0..3 {
        let resp = http
            .post(proc.url("/v1/chat/completions"))
            .json(&chat_body(&format!("Say hello in French, take {i}"), false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = http.post(proc.url("/v1/chat/completions")).json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    assert!(resp.status().is_server_error() || resp.status().is_client_error(), "{}", resp.status());
    let resp = http.post(proc.url("/v1/chat/completions")).json(&chat_body(SECRET_PROMPT, false)).send().await.unwrap();
    assert!(!resp.status().is_success(), "{}", resp.status());
    let proxied = proxied_client(&proc, false, None);
    let resp = proxied
        .post("https://api.openai.com/v1/chat/completions")
        .bearer_auth("sk-client-own-key")
        .json(&chat_body("Name three rivers", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // promtool finds nothing to say about the exposition.
    let text = http.get(format!("http://{}/metrics", proc.admin)).send().await.unwrap().text().await.unwrap();
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");

    // A real Prometheus scraping the admin listener every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{}']\n",
            proc.admin
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let prom_log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // Wait for at least three scrapes, so `rate` over a minute has two points.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) =
            http.post(format!("{base}/api/v1/query")).form(&[("query", "count_over_time(up[1m])")]).send().await
        {
            if let Ok(json) = resp.json::<serde_json::Value>().await {
                let scrapes = json["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
                if scrapes.is_some_and(|n| n >= 3.0) {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "Prometheus did not scrape sluice in time:\n{}", prom_log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let up = query(&http, &base, "up").await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}\n{}", prom_log());

    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dashboards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // Importable as is: a datasource variable, no hard-coded uid.
        let vars = dashboard["templating"]["list"].as_array().unwrap();
        assert!(vars.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus"), "{name}");
        let mut exprs = Vec::new();
        panel_exprs(&dashboard, &mut exprs);
        assert!(!exprs.is_empty(), "{name} has no queries");
        for panel in dashboard["panels"].as_array().unwrap() {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{name}: {}", panel["title"]);
        }
        for (title, expr) in exprs {
            let filled = substitute(&expr);
            assert!(!filled.contains('$'), "{name} / {title}: unfilled variable in {filled}");
            let json = query(&http, &base, &filled).await;
            let empty = json["data"]["result"].as_array().is_none_or(|r| r.is_empty());
            if json["status"] != "success" || empty {
                failures.push(format!("{name} / {title}: {filled}\n  -> {json}"));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} panel queries returned no data:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
