//! The architecture, checked: modules depend on each other one way only.
//!
//! Every file under `src/` is a module; every `crate::…` and `super::…` path in it (outside its
//! `#[cfg(test)]` tail) is a dependency on the module that path names. The test fails on any
//! cycle between modules (a parent re-exporting a child counts as the parent using it, so a
//! child may not use its parent back), on a layer using one above it (front ends → `read` →
//! `peers` → `store` → `nix`; `sources` feed the store; `config` uses only `nix`), and on
//! git2 named outside `store/` or I/O and async crates named in `nix/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, e.g. `["store", "import"]`; the crate root is `[]`.
type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file with its module path.
fn modules() -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src()).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            if rel == Path::new("main") {
                continue; // the binary: a crate of its own
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests at the end of a file may reach anywhere.
            let text = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.insert(module, text);
        }
    }
    out
}

fn ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths after `prefix::` in `text`, braces expanded one level deep per group.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let needle = format!("{prefix}::");
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + needle.len()..];
        if before.is_some_and(|c| ident(c) || c == ':') {
            continue;
        }
        expand(rest, &[], &mut out);
    }
    out
}

/// Reads `a::b::{c, d::e}` at the start of `text` into paths under `base`.
fn expand(text: &str, base: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = base.to_vec();
    let mut rest = text;
    loop {
        let name: String = rest.chars().take_while(|&c| ident(c)).collect();
        if name.is_empty() {
            break;
        }
        rest = &rest[name.len()..];
        path.push(name);
        if let Some(r) = rest.strip_prefix("::") {
            rest = r;
            if let Some(inner) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item = String::new();
                for c in inner.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(item.trim(), &path, out);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                expand(item.trim(), &path, out);
                return;
            }
            continue;
        }
        break;
    }
    out.push(path);
}

/// The module a path names: its longest prefix that is a module.
fn resolve(path: &[String], known: &BTreeMap<Module, String>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| known.contains_key(m))
        .unwrap_or_default()
}

/// Module → modules it uses (itself and the crate root excluded).
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let known = modules();
    let mut graph = BTreeMap::new();
    for (module, text) in &known {
        let mut deps = BTreeSet::new();
        for p in paths_after(text, "crate") {
            deps.insert(resolve(&p, &known));
        }
        // `super` of a module is its parent.
        let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
        for p in paths_after(text, "super") {
            let full: Vec<String> = parent.iter().cloned().chain(p).collect();
            deps.insert(resolve(&full, &known));
        }
        // A parent naming its child: `use child::X`, `pub use child::X`, `child::f()`.
        for child in known
            .keys()
            .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
        {
            let Some(last) = child.last() else { continue };
            if !paths_after(text, last).is_empty() {
                deps.insert(child.clone());
            }
        }
        deps.remove(module);
        deps.remove(&Vec::new());
        graph.insert(module.clone(), deps);
    }
    graph
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let graph = graph();
    assert!(graph.len() > 40, "read only {} modules", graph.len());
    // The reader sees edges of every kind: `use crate::…`, `use super::…`, re-exports.
    let m = |s: &str| s.split("::").map(String::from).collect::<Module>();
    for (from, to) in [
        ("serve::nar", "serve::range"),
        ("store::import", "store::repo"),
        ("store", "store::repo"),
        ("read", "peers"),
        ("cli", "cli::add"),
    ] {
        assert!(
            graph[&m(from)].contains(&m(to)),
            "{from} → {to} not seen: {:?}",
            graph[&m(from)]
        );
    }
    // Depth-first search for a back edge; report every cycle found.
    let mut cycles = Vec::new();
    let mut state: BTreeMap<&Module, u8> = BTreeMap::new(); // 1: on the stack, 2: done
    fn visit<'g>(
        m: &'g Module,
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<&'g Module, u8>,
        stack: &mut Vec<&'g Module>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(m, 1);
        stack.push(m);
        for d in graph.get(m).into_iter().flatten() {
            match state.get(d) {
                Some(1) => {
                    let from = stack.iter().position(|s| *s == d).unwrap_or(0);
                    let ring: Vec<String> = stack[from..].iter().map(|s| name(s)).chain([name(d)]).collect();
                    cycles.push(ring.join(" → "));
                }
                Some(_) => {}
                None => visit(d, graph, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(m, 2);
    }
    for m in graph.keys() {
        if !state.contains_key(m) {
            visit(m, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn layers_point_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("nix", &[][..]),
        ("config", &["nix"][..]),
        ("store", &["nix"][..]),
        ("sources", &["store", "nix"][..]),
        ("peers", &["store", "nix", "config"][..]),
        ("read", &["peers", "store", "nix", "config"][..]),
        ("serve", &["read", "peers", "store", "nix", "config"][..]),
        ("mount", &["read", "store", "nix", "config"][..]),
        (
            "cli",
            &["serve", "mount", "read", "peers", "sources", "store", "nix", "config"][..],
        ),
    ]);
    let mut wrong = Vec::new();
    for (module, deps) in graph() {
        let Some(top) = module.first() else { continue };
        let ok = allowed
            .get(top.as_str())
            .unwrap_or_else(|| panic!("no layer for {top}"));
        for d in deps {
            let target = d[0].as_str();
            if target != top && !ok.contains(&target) {
                wrong.push(format!("{} uses {}", name(&module), name(&d)));
            }
        }
    }
    assert!(wrong.is_empty(), "layers used upwards:\n{}", wrong.join("\n"));
}

#[test]
fn only_the_store_names_git2_and_formats_do_no_io() {
    let mut wrong = Vec::new();
    for (module, text) in modules() {
        let Some(top) = module.first().map(String::as_str) else {
            continue; // lib.rs: doc comments only
        };
        if top != "store" && text.contains("git2") {
            wrong.push(format!("{} names git2", name(&module)));
        }
        if top == "nix" {
            for banned in ["tokio", "hyper", "std::fs", "std::process", "std::net", "ureq"] {
                if text.contains(banned) {
                    wrong.push(format!("{} uses {banned}", name(&module)));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
