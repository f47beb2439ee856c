//! The Splunk app in `dashboards/splunk/sluice` (issue 15, point 4): the
//! package `scripts/package-splunk-app` builds has the layout Splunk installs
//! and is the same bytes every time, `splunk-appinspect` passes it with zero
//! failures and zero errors, and every dashboard is well-formed Simple XML
//! 1.1 whose panels search sluice's sourcetypes under a time picker.
//!
//! `splunk-appinspect` is a Python tool (`python3 -m pip install
//! splunk-appinspect`; `.ci/run` installs it). Its exit status is 0 even when
//! checks fail, so the test reads the JSON summary it writes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const APP: &str = "sluice";
const SOURCETYPES: [&str; 3] = ["sluice:decision", "sluice:proxy", "sluice:shadow"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn app_dir() -> PathBuf {
    repo().join("dashboards/splunk").join(APP)
}

/// Runs `scripts/package-splunk-app OUT` and returns OUT.
fn package(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let run = Command::new(repo().join("scripts/package-splunk-app"))
        .arg(&out)
        .output()
        .expect("run scripts/package-splunk-app");
    assert!(
        run.status.success(),
        "scripts/package-splunk-app failed ({}):\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.is_file(), "scripts/package-splunk-app wrote no {}", out.display());
    out
}

/// One entry of a ustar archive.
#[derive(Debug)]
struct Entry {
    path: String,
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
}

fn octal(field: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(field);
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(text, 8).unwrap_or_else(|_| panic!("bad octal field {text:?} in tar header"))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).expect("tar name is UTF-8")
}

/// Reads a gzip'd ustar archive (what the packaging script writes).
fn read_tgz(path: &Path) -> Vec<Entry> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut tar).expect("gunzip the package");
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let computed: u64 =
            header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
        assert_eq!(octal(&header[148..156]), computed, "bad tar header checksum at byte {at}");
        let name = cstr(&header[0..100]);
        let prefix = if &header[257..262] == b"ustar" { cstr(&header[345..500]) } else { String::new() };
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let size = octal(&header[124..136]) as usize;
        let data = tar[at + 512..at + 512 + size].to_vec();
        entries.push(Entry {
            path,
            kind: header[156],
            mode: octal(&header[100..108]) as u32,
            uid: octal(&header[108..116]),
            gid: octal(&header[116..124]),
            mtime: octal(&header[136..148]),
            data,
        });
        at += 512 + size.div_ceil(512) * 512;
    }
    entries
}

#[test]
fn package_has_the_layout_splunk_installs_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let first = package(tmp.path(), "a.tgz");
    let second = package(tmp.path(), "b.tgz");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
        "two packagings of the same tree differ"
    );

    let entries = read_tgz(&first);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries are not sorted");
    for required in
        ["sluice/default/app.conf", "sluice/metadata/default.meta", "sluice/default/props.conf", "sluice/README"]
    {
        assert!(paths.contains(&required), "{required} is not in the package: {paths:?}");
    }
    let mtime = entries[0].mtime;
    for e in &entries {
        let trimmed = e.path.trim_end_matches('/');
        assert!(trimmed == APP || trimmed.starts_with("sluice/"), "{} is outside the app's top directory", e.path);
        let parts: Vec<&str> = trimmed.split('/').collect();
        assert!(!parts.iter().any(|p| p.starts_with('.')), "hidden file in the package: {}", e.path);
        assert!(
            !parts.contains(&"local") && !trimmed.ends_with("local.meta"),
            "local configuration in the package: {}",
            e.path
        );
        assert_eq!((e.uid, e.gid), (0, 0), "{} is not owned by 0:0", e.path);
        assert_eq!(e.mtime, mtime, "{} has its own mtime", e.path);
        match e.kind {
            b'5' => assert_eq!(e.mode, 0o755, "directory {} has mode {:o}", e.path, e.mode),
            b'0' | 0 => assert!(e.mode == 0o644 || e.mode == 0o755, "file {} has mode {:o}", e.path, e.mode),
            other => panic!("{} is neither a file nor a directory (type {:?})", e.path, other as char),
        }
    }
    // What is packaged is what is in the repository.
    for e in entries.iter().filter(|e| e.kind != b'5') {
        let on_disk = app_dir().join(e.path.strip_prefix("sluice/").unwrap());
        assert_eq!(std::fs::read(&on_disk).unwrap(), e.data, "{} differs from {}", e.path, on_disk.display());
    }
}

/// How to run splunk-appinspect, and its name for messages: `$SPLUNK_APPINSPECT`
/// if set, else the `splunk-appinspect` script if it runs, else the installed
/// Python package through `python3` (pip may put the script off PATH). Fails
/// the test, saying how to install it, when none is there.
fn appinspect() -> (Command, String) {
    if let Ok(tool) = std::env::var("SPLUNK_APPINSPECT") {
        return (Command::new(&tool), format!("`{tool}`"));
    }
    let runs = |command: &mut Command| command.output().is_ok_and(|o| o.status.success());
    if runs(Command::new("splunk-appinspect").arg("--help")) {
        return (Command::new("splunk-appinspect"), "`splunk-appinspect`".to_string());
    }
    let entry = "import sys; from splunk_appinspect.main import execute; sys.argv[0] = 'splunk-appinspect'; sys.exit(execute())";
    if runs(Command::new("python3").args(["-c", "import splunk_appinspect.main"])) {
        let mut command = Command::new("python3");
        command.args(["-c", entry]);
        return (command, "splunk-appinspect (python3 -c ...)".to_string());
    }
    panic!(
        "splunk-appinspect is not installed, and this test runs it on the packaged Splunk app. \
         Install it with `python3 -m pip install splunk-appinspect` (it needs libmagic: Debian's \
         libmagic1), or set SPLUNK_APPINSPECT to the path of its `splunk-appinspect` script. \
         `.ci/run` installs it."
    )
}

#[test]
fn appinspect_passes_with_no_failures_and_no_errors() {
    let (mut command, tool) = appinspect();
    let tmp = tempfile::tempdir().unwrap();
    let tgz = package(tmp.path(), "sluice-splunk-app.tgz");
    let report = tmp.path().join("appinspect.json");
    let run = command
        .arg("inspect")
        .arg(&tgz)
        .arg("--output-file")
        .arg(&report)
        .arg("--data-format")
        .arg("json")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "{tool} inspect wrote no report ({e}); it exited with {}:\n{}{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let report: Value = serde_json::from_str(&text).expect("appinspect's report is JSON");
    let summary = &report["summary"];
    let count = |key: &str| summary[key].as_u64().unwrap_or_else(|| panic!("no summary.{key} in {summary}"));
    let (failures, errors) = (count("failure"), count("error"));
    assert!(count("success") > 0, "appinspect ran no checks: {summary}");

    // Every check that did not pass, with its messages.
    let mut problems = Vec::new();
    for r in report["reports"].as_array().into_iter().flatten() {
        for group in r["groups"].as_array().into_iter().flatten() {
            for check in group["checks"].as_array().into_iter().flatten() {
                let result = check["result"].as_str().unwrap_or("");
                if matches!(result, "failure" | "error" | "warning") {
                    let messages: Vec<String> = check["messages"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| {
                            let file = m["message_filename"].as_str().or(m["filename"].as_str()).unwrap_or("");
                            format!("    {} [{file}]", m["message"].as_str().unwrap_or(""))
                        })
                        .collect();
                    problems.push(format!(
                        "  {result}: {}\n{}",
                        check["name"].as_str().unwrap_or("?"),
                        messages.join("\n")
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        eprintln!("appinspect summary {summary}\n{}", problems.join("\n"));
    }
    assert!(
        failures == 0 && errors == 0,
        "appinspect: {failures} failures, {errors} errors (summary {summary}):\n{}",
        problems.join("\n")
    );
}

/// A minimal well-formedness check: tags nest and close, attributes are
/// quoted, and every `&` starts one of XML's predefined or numeric entities.
fn check_well_formed(name: &str, xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = xml.trim_start_matches('\u{feff}');
    let mut roots = 0;
    let check_text = |text: &str| {
        let mut t = text;
        while let Some(i) = t.find('&') {
            t = &t[i + 1..];
            let end =
                t.find(';').unwrap_or_else(|| panic!("{name}: unterminated entity near {:?}", &t[..t.len().min(30)]));
            let entity = &t[..end];
            let ok = matches!(entity, "lt" | "gt" | "amp" | "quot" | "apos")
                || entity.strip_prefix("#x").is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
                || entity.strip_prefix('#').is_some_and(|d| d.parse::<u32>().is_ok());
            assert!(ok, "{name}: unknown entity &{entity};");
        }
    };
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        check_text(text);
        assert!(!stack.is_empty() || text.trim().is_empty(), "{name}: text outside the root element: {text:?}");
        rest = &rest[open..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").unwrap_or_else(|| panic!("{name}: unterminated comment"));
            rest = &after[end + 3..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").unwrap_or_else(|| panic!("{name}: unterminated CDATA"));
            rest = &after[end + 3..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("<?") {
            assert!(stack.is_empty() && roots == 0, "{name}: processing instruction inside the document");
            let end = after.find("?>").unwrap_or_else(|| panic!("{name}: unterminated <?"));
            rest = &after[end + 2..];
            continue;
        }
        let end = rest.find('>').unwrap_or_else(|| panic!("{name}: unterminated tag"));
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        assert!(!tag.contains('<'), "{name}: '<' inside tag <{tag}>");
        if let Some(closing) = tag.strip_prefix('/') {
            let open = stack.pop().unwrap_or_else(|| panic!("{name}: </{closing}> closes nothing"));
            assert_eq!(open, closing.trim(), "{name}: <{open}> closed by </{closing}>");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let element = body.split_whitespace().next().unwrap_or_else(|| panic!("{name}: empty tag"));
        // Attributes: name="value" or name='value'.
        let mut attrs = body[element.len()..].trim();
        while !attrs.is_empty() {
            let eq = attrs.find('=').unwrap_or_else(|| panic!("{name}: attribute without value in <{tag}>"));
            let value = attrs[eq + 1..].trim_start();
            let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'');
            let quote = quote.unwrap_or_else(|| panic!("{name}: unquoted attribute in <{tag}>"));
            let close = value[1..].find(quote).unwrap_or_else(|| panic!("{name}: unterminated attribute in <{tag}>"));
            check_text(&value[1..1 + close]);
            attrs = value[close + 2..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
            assert_eq!(roots, 1, "{name}: more than one root element");
        }
        if !self_closing {
            stack.push(element.to_string());
        }
    }
    check_text(rest);
    assert!(rest.trim().is_empty(), "{name}: text after the root element");
    assert!(stack.is_empty(), "{name}: unclosed <{}>", stack.join("> <"));
    assert_eq!(roots, 1, "{name}: no root element");
}

/// The text of each `<element>...</element>`, entities decoded.
fn elements<'a>(xml: &'a str, element: &str) -> Vec<String> {
    let (open, close) = (format!("<{element}>"), format!("</{element}>"));
    let mut out = Vec::new();
    let mut rest: &'a str = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let end = after.find(&close).unwrap_or_else(|| panic!("<{element}> without </{element}>"));
        out.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `[stanza]` → its `key = value` lines, for a .conf file.
fn conf(path: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stanza = String::new();
    for line in read(path).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            stanza = name.to_string();
            out.entry(stanza.clone()).or_default();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(stanza.clone()).or_default().insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// `query` with each `` `macro` `` or `` `macro(arg, ...)` `` replaced by its
/// definition in macros.conf (arguments substituted), recursively.
fn expand_macros(query: &str, macros: &BTreeMap<String, BTreeMap<String, String>>, view: &str) -> String {
    let mut text = query.to_string();
    for _ in 0..8 {
        if !text.contains('`') {
            return text;
        }
        let mut out = String::new();
        for (i, part) in text.split('`').enumerate() {
            if i % 2 == 0 {
                out.push_str(part);
                continue;
            }
            let (name, args): (&str, Vec<&str>) = match part.split_once('(') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix(')').unwrap_or_else(|| panic!("{view}: bad macro call `{part}`"));
                    (name, inner.split(',').map(|a| a.trim().trim_matches('"')).collect())
                }
                None => (part, Vec::new()),
            };
            let key = if args.is_empty() { name.to_string() } else { format!("{name}({})", args.len()) };
            let stanza =
                macros.get(&key).unwrap_or_else(|| panic!("{view}: search calls `{part}`, not in macros.conf ({key})"));
            let mut definition =
                stanza.get("definition").unwrap_or_else(|| panic!("[{key}] has no definition")).clone();
            let names: Vec<&str> =
                stanza.get("args").map(|a| a.split(',').map(str::trim).collect()).unwrap_or_default();
            assert_eq!(names.len(), args.len(), "[{key}] args");
            for (arg, value) in names.iter().zip(&args) {
                definition = definition.replace(&format!("${arg}$"), value);
            }
            out.push_str(&definition);
        }
        text = out;
    }
    panic!("{view}: macros nest too deep in {query}");
}

#[test]
fn dashboards_are_simple_xml_1_1_over_sluice_sourcetypes() {
    let views_dir = app_dir().join("default/data/ui/views");
    let mut views: Vec<PathBuf> = std::fs::read_dir(&views_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    views.sort();
    assert!(views.len() >= 4, "expected the dashboards in {}, found {views:?}", views_dir.display());

    let macros = conf(&app_dir().join("default/macros.conf"));
    let nav = read(&app_dir().join("default/data/ui/nav/default.xml"));
    check_well_formed("nav/default.xml", &nav);

    let mut panels = 0;
    for view in &views {
        let name = view.file_name().unwrap().to_string_lossy().to_string();
        let xml = read(view);
        check_well_formed(&name, &xml);
        let root = xml.trim_start().split('>').next().unwrap();
        assert!(
            (root.starts_with("<form ") || root.starts_with("<dashboard ")) && root.contains("version=\"1.1\""),
            "{name}: root is not a Simple XML 1.1 <form>/<dashboard>: {root}>"
        );
        assert!(xml.contains("<input type=\"time\" token=\"time\""), "{name}: no time picker (token `time`)");
        let stem = name.trim_end_matches(".xml");
        assert!(nav.contains(&format!("<view name=\"{stem}\"")), "{name} is not in the app's navigation");

        let searches = elements(&xml, "search");
        let queries = elements(&xml, "query");
        assert!(!queries.is_empty(), "{name}: no panel searches");
        assert_eq!(searches.len(), queries.len(), "{name}: a <search> without a <query>");
        for search in &searches {
            let query = &elements(search, "query")[0];
            assert!(
                search.contains("<earliest>$time.earliest$</earliest>")
                    && search.contains("<latest>$time.latest$</latest>"),
                "{name}: panel search ignores the time picker: {query}"
            );
            // Every macro a search calls is one the app defines, and with them
            // expanded the search selects sluice's sourcetypes.
            let expanded = expand_macros(query, &macros, &name);
            assert!(
                expanded.contains("sourcetype=sluice:"),
                "{name}: panel search does not select sluice's sourcetypes: {query}\n(expanded: {expanded})"
            );
            panels += 1;
        }
    }
    assert!(panels >= 20, "only {panels} panel searches");

    // Every dashboard the issue names has a panel.
    let all: String = views.iter().map(|v| read(v)).collect();
    for needle in [
        "timechart count by decision",
        "by team",
        "by rule",
        "finding_types{}",
        "decision=block",
        "decision=redact",
        "sum(cost_usd)",
        "\"local\"",
        "by ai_app ai_category team sanctioned",
        "personal_account=true",
        "len(download_repo)",
    ] {
        assert!(all.contains(needle), "no dashboard panel has `{needle}`");
    }
}

#[test]
fn props_eventtypes_and_tags_cover_the_sourcetypes_for_cim_web() {
    let props = conf(&app_dir().join("default/props.conf"));
    for st in SOURCETYPES {
        let stanza = props.get(st).unwrap_or_else(|| panic!("props.conf has no [{st}]"));
        assert_eq!(stanza.get("KV_MODE").map(String::as_str), Some("json"), "[{st}] KV_MODE");
        assert_eq!(stanza.get("SHOULD_LINEMERGE").map(String::as_str), Some("false"), "[{st}] SHOULD_LINEMERGE");
        assert!(!stanza.contains_key("INDEXED_EXTRACTIONS"), "[{st}] must not extract JSON at index time too");
        assert_eq!(stanza.get("EVAL-vendor_product").map(String::as_str), Some("coalesce(vendor_product, \"sluice\")"));
    }
    let eventtypes = conf(&app_dir().join("default/eventtypes.conf"));
    assert_eq!(eventtypes["sluice_web"]["search"], "sourcetype=sluice:* NOT sourcetype=sluice:checkpoint");
    // Signed checkpoints are searchable JSON too, but not web events.
    let checkpoint = props.get("sluice:checkpoint").expect("props.conf has [sluice:checkpoint]");
    assert_eq!(checkpoint.get("KV_MODE").map(String::as_str), Some("json"));
    let tags = conf(&app_dir().join("default/tags.conf"));
    let web = &tags["eventtype=sluice_web"];
    assert_eq!(
        (web["web"].as_str(), web["proxy"].as_str()),
        ("enabled", "enabled"),
        "CIM Web needs tags web and proxy"
    );
    for stanza in tags.keys() {
        let et =
            stanza.strip_prefix("eventtype=").unwrap_or_else(|| panic!("tags.conf [{stanza}] is not an eventtype"));
        assert!(eventtypes.contains_key(et), "tags.conf tags unknown eventtype {et}");
    }

    // The versions appinspect compares agree with each other.
    let app = conf(&app_dir().join("default/app.conf"));
    assert_eq!(app["id"]["name"], APP);
    assert_eq!(app["package"]["id"], APP);
    assert_eq!(app["id"]["version"], app["launcher"]["version"]);
    let manifest: Value = serde_json::from_str(&read(&app_dir().join("app.manifest"))).unwrap();
    assert_eq!(manifest["info"]["id"]["name"], APP);
    assert_eq!(manifest["info"]["id"]["version"].as_str(), Some(app["id"]["version"].as_str()));
}
