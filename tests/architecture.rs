//! The module map of docs/ARCHITECTURE.md, checked on the source tree: a module never imports from
//! its right (`domain` → `store` → `core` → `transport` → `proto::*` → `console` → `server`), and a front-end never
//! names another front-end.

use std::path::{Path, PathBuf};

/// Where each layer may not reach: (directory or file under src/, forbidden paths).
const RULES: &[(&str, &[&str])] = &[
    (
        "domain",
        &[
            "crate::config",
            "crate::core",
            "crate::store",
            "crate::transport",
            "crate::proto",
            "crate::server",
            "crate::metrics",
        ],
    ),
    ("metrics.rs", &["crate::"]),
    ("store", &["crate::core", "crate::cluster", "crate::transport", "crate::proto", "crate::server"]),
    ("core", &["crate::cluster", "crate::transport", "crate::proto", "crate::server"]),
    ("cluster", &["crate::transport", "crate::proto", "crate::server"]),
    // Offline push sits beside the cluster: the core feeds it, it reads the store and calls a webhook.
    ("push", &["crate::cluster", "crate::transport", "crate::proto", "crate::server"]),
    ("transport", &["crate::proto", "crate::server"]),
    ("proto", &["crate::store", "crate::server"]),
    // The console's page talks to the server over its public protocols only; its administration
    // calls sit beside `server`, composing the front-ends (never the store directly).
    ("console/mod.rs", &["crate::"]),
    ("console", &["crate::store", "crate::server"]),
];

const FRONT_ENDS: &[&str] = &["wsim", "gateway", "longweb", "gru"];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code lines (comments left out) of `text` that name one of `forbidden`.
fn offending_lines(text: &str, forbidden: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter(|l| forbidden.iter().any(|f| l.contains(f)))
        .map(|l| l.trim().to_string())
        .collect()
}

fn violations(under: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(under);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        for line in offending_lines(&text, forbidden) {
            out.push(format!("{}: {line}", f.display()));
        }
    }
    out
}

#[test]
fn layers_import_only_from_their_left() {
    let mut all = Vec::new();
    for (under, forbidden) in RULES {
        all.extend(violations(under, forbidden));
    }
    assert!(all.is_empty(), "imports against the module map:\n{}", all.join("\n"));
}

#[test]
fn front_ends_do_not_name_each_other() {
    let mut all = Vec::new();
    for fe in FRONT_ENDS {
        let others: Vec<String> =
            FRONT_ENDS.iter().filter(|o| *o != fe).map(|o| format!("crate::proto::{o}")).collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        all.extend(violations(&format!("proto/{fe}"), &others));
    }
    assert!(all.is_empty(), "front-ends naming each other:\n{}", all.join("\n"));
}

#[test]
fn the_check_sees_imports_and_skips_comments() {
    let text = "use crate::store::Store;\n// crate::store in a comment\n    /// and crate::store in a doc\nlet x = crate::store::f();";
    assert_eq!(
        offending_lines(text, &["crate::store"]),
        ["use crate::store::Store;", "let x = crate::store::f();"]
    );
    assert!(offending_lines("use crate::domain::ids;", &["crate::store"]).is_empty());
}
