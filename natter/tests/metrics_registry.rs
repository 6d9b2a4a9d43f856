//! Every metric the code registers is decided (expected to move in the live
//! test, or listed as unmovable with a reason) and documented.

#[path = "support/metrics_lists.rs"]
mod metrics_lists;
#[path = "support/prom.rs"]
mod prom;

use metrics_lists::*;
use prom::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

// ------------------------------------------------------------------ the source tree

/// Every metric name the workspace's sources register: the first argument of
/// `counter!`, `gauge!`, `histogram!` and `describe_*!` in `*/src/**.rs`.
fn registered_in_source() -> BTreeMap<String, Vec<String>> {
    let manifest = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let root = manifest.parent().unwrap();
    let mut files = Vec::new();
    collect_sources(root, false, &mut files);
    assert!(
        files.len() > 50,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, macro_name) in metric_names(&text) {
            match name {
                Some(n) => names
                    .entry(n)
                    .or_default()
                    .push(file.strip_prefix(root).unwrap().display().to_string()),
                None => unreadable.push(format!(
                    "{}: {macro_name}! without a literal name",
                    file.display()
                )),
            }
        }
    }
    assert!(
        unreadable.is_empty(),
        "metric names must be string literals so this test sees them:\n{}",
        unreadable.join("\n")
    );
    names
}

/// `.rs` files below a `src` directory (skipping build output, VCS and hidden dirs).
fn collect_sources(dir: &Path, in_src: bool, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            collect_sources(&path, in_src || name == "src", out);
        } else if in_src && name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// (name, macro) for each metrics macro call in `text`; the name is `None`
/// when the first argument is not a string literal.
fn metric_names(text: &str) -> Vec<(Option<String>, &'static str)> {
    const MACROS: &[&str] = &[
        "counter",
        "gauge",
        "histogram",
        "describe_counter",
        "describe_gauge",
        "describe_histogram",
    ];
    let mut out = Vec::new();
    for m in MACROS {
        let needle = format!("{m}!(");
        let mut from = 0;
        while let Some(at) = text[from..].find(&needle) {
            let start = from + at;
            from = start + needle.len();
            // `gauge!(` inside `describe_gauge!(` is that macro's.
            let before = text[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = text[from..].trim_start();
            let name = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(n, _)| n.to_owned());
            out.push((name, *m));
        }
    }
    out
}

#[test]
fn every_registered_metric_is_decided() {
    let names = registered_in_source();
    let moved: BTreeSet<&str> = MOVED.iter().copied().collect();
    let not: BTreeSet<&str> = NOT_MOVABLE.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(moved.len(), MOVED.len(), "MOVED has duplicates");
    assert_eq!(not.len(), NOT_MOVABLE.len(), "NOT_MOVABLE has duplicates");
    let both: Vec<&&str> = moved.intersection(&not).collect();
    assert!(both.is_empty(), "both MOVED and NOT_MOVABLE: {both:?}");
    let undecided: Vec<String> = names
        .iter()
        .filter(|(n, _)| !moved.contains(n.as_str()) && !not.contains(n.as_str()))
        .map(|(n, files)| format!("{n} (in {})", files.join(", ")))
        .collect();
    assert!(
        undecided.is_empty(),
        "metrics registered in the code but neither moved by the scenario (MOVED) nor listed with a reason (NOT_MOVABLE):\n{}",
        undecided.join("\n")
    );
    let gone: Vec<&&str> = moved
        .union(&not)
        .filter(|n| !names.contains_key(**n))
        .collect();
    assert!(
        gone.is_empty(),
        "listed here but registered nowhere in the code: {gone:?}"
    );
}

#[test]
fn every_registered_metric_is_documented() {
    let manifest = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let root = manifest.parent().unwrap();
    let mut docs = String::new();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let undocumented: Vec<String> = registered_in_source()
        .into_keys()
        .filter(|n| !docs.contains(&format!("`{n}")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics in no docs/*.md table: {undocumented:?}"
    );
}

#[test]
fn the_source_scan_reads_names_and_refuses_non_literals() {
    let text = r#"
        metrics::counter!("a_total", "k" => "v").increment(1);
        ::metrics::gauge!(
            "b_gauge"
        ).set(1.0);
        metrics::describe_histogram!("c_seconds", "what");
        metrics::counter!(NAME).increment(1);
    "#;
    let got = metric_names(text);
    assert_eq!(
        got,
        vec![
            (Some("a_total".to_owned()), "counter"),
            (None, "counter"),
            (Some("b_gauge".to_owned()), "gauge"),
            (Some("c_seconds".to_owned()), "describe_histogram"),
        ]
    );
}

#[test]
fn the_exposition_parser_reads_labels_and_histograms() {
    let s = Scrape::parse(
        "# TYPE h_seconds histogram\n\
         h_seconds_bucket{k=\"a\",le=\"0.5\"} 1\n\
         h_seconds_sum{k=\"a\"} 0.25\n\
         h_seconds_count{k=\"a\"} 3\n\
         h_seconds_count{k=\"b\"} 4\n\
         # TYPE c_total counter\n\
         c_total{route=\"/v1/x/{id}\",q=\"say \\\"hi\\\"\"} 2\n\
         c_total{route=\"/v1/y\",q=\"\"} 5\n",
    );
    assert_eq!(s.level("h_seconds", &[]), 7.0);
    assert_eq!(s.level("h_seconds", &[("k", "a")]), 3.0);
    assert_eq!(s.level("c_total", &[]), 7.0);
    assert_eq!(s.level("c_total", &[("route", "/v1/x/{id}")]), 2.0);
    assert_eq!(s.level("c_total", &[("q", "say \"hi\"")]), 2.0);
    assert_eq!(s.level("missing_total", &[]), 0.0);
    assert!(s.has("c_total") && !s.has("missing_total"));
}
