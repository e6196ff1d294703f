//! The layering rules of docs/CONTRIBUTING.md, checked on the source: no crate has an
//! import cycle between its modules, and the client's rooms import only downward
//! (`sync` → `transfer` → `net` → `local` → `pool`). Test modules may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules (`a::b`, "" for the root) and the modules each one names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "main" | "lib")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The file's text without its test module (by convention the last item of a file) and
/// without comments.
fn code_of(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.push(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    out
}

fn graph(krate: &str) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let texts: BTreeMap<String, String> = files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with("_tests.rs"))
        .map(|f| {
            (
                module_of(&src, f),
                code_of(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    let mut g = Graph::new();
    for (module, code) in &texts {
        let deps = g.entry(module.clone()).or_default();
        for path in crate_paths(code) {
            // The longest prefix that is a module of the crate is what the path names.
            let named = (1..=path.len())
                .rev()
                .map(|k| path[..k].join("::"))
                .find(|m| texts.contains_key(m));
            let Some(named) = named else { continue };
            // A module may use its own ancestors' items: they declared it.
            let ancestor = module == &named || module.starts_with(&format!("{named}::"));
            if !ancestor {
                deps.insert(named);
            }
        }
    }
    g
}

/// A cycle of modules, if the graph has one.
fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_owned());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_an_import_cycle() {
    for krate in [
        "proto", "engine", "server", "client", "benches", "chaos", "testkit",
    ] {
        let g = graph(krate);
        assert!(
            g.len() > 1 || krate == "testkit",
            "{krate}: no modules found"
        );
        if let Some(c) = cycle(&g) {
            panic!("{krate} has an import cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g).map(|c| c.len()), Some(4));
    g.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&g), None);
}

#[test]
fn the_clients_rooms_import_only_downward() {
    let rank = |m: &str| match m.split("::").next().unwrap_or("") {
        "pool" => 0,
        "local" => 1,
        "net" => 2,
        "transfer" => 3,
        "sync" => 4,
        _ => 5,
    };
    let g = graph("client");
    for room in ["local", "net", "transfer", "sync"] {
        assert!(g.keys().any(|m| m.starts_with(room)), "no room {room}");
    }
    for (m, deps) in &g {
        for d in deps {
            assert!(
                rank(d) <= rank(m),
                "client: {m} imports {d}, a room above it"
            );
        }
    }
}
