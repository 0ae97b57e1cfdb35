//! The crate's layering, kept by a test (issue 12): no import cycle between the files of `src/`,
//! and inside the crate every name comes from its defining module, never through `lib.rs`'s
//! re-exports (those are for users). No file of `src/`, `tests/` or `benches/` is over 600 lines
//! of code.
//!
//! The graph is read from the paths in the code: `crate::…`, `$crate::…` and `super::…`,
//! including `use` groups. A path names the deepest module file it reaches. A child module's use
//! of its parent (`super::Config` in `pool/fetch.rs`) counts as an edge, and so does a parent's
//! `crate::pool::fetch::…`; a parent naming its child by a relative path (`fetch::fetcher`) does
//! not, since that is what declaring a child module is for. Test-only modules
//! (`#[cfg(test)] mod …`) are left out. (The same reading as `shared/tools/layers.py`.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_CODE_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (`pool/mod.rs` → `["pool"]`, `lib.rs` → `[]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] {
        parts.pop();
    }
    parts
}

/// The file of a module path, if it is a module file.
fn file_of(src: &Path, parts: &[String]) -> Option<PathBuf> {
    if parts.is_empty() {
        return Some(src.join("lib.rs"));
    }
    let base = parts.iter().fold(src.to_path_buf(), |p, s| p.join(s));
    [base.with_extension("rs"), base.join("mod.rs")]
        .into_iter()
        .find(|c| c.is_file())
}

/// The text without `#[cfg(test)] mod … { … }` blocks and without `//` comments.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[cfg(test)]") {
        let after = &rest[i + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        let brace = after.find('{');
        let semi = after.find(';');
        match (is_mod, brace) {
            (true, Some(b)) if semi.is_none_or(|s| s > b) => {
                out.push_str(&rest[..i]);
                let body = &after[b + 1..];
                let mut depth = 1;
                let mut end = body.len();
                for (k, ch) in body.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &body[end..];
            }
            _ => {
                out.push_str(&rest[..i + "#[cfg(test)]".len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…`, `$crate::…` or `super::…` path in `code`, as (head, chains): a `use`
/// group `a::{b::X, c}` gives one chain per member (`a::b::X`, `a::c`).
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let boundary = code.is_char_boundary(i)
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        let head = ["$crate::", "crate::", "super::"]
            .into_iter()
            .find(|h| boundary && code[i..].starts_with(h));
        let Some(head) = head else {
            i += 1;
            continue;
        };
        let mut j = i + head.len();
        let mut head = head.trim_end_matches("::").to_string();
        while head.starts_with("super") && code[j..].starts_with("super::") {
            head.push_str("::super");
            j += "super::".len();
        }
        let (chains, end) = chains_at(code, j);
        out.push((head, chains));
        i = end.max(i + 1);
    }
    out
}

/// The chains of the path that starts at byte `j`: `a::b`, or `a::{b, c::{d, e}}` flattened;
/// and where the path ends.
fn chains_at(code: &str, j: usize) -> (Vec<String>, usize) {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let end = code[j..]
        .find(|c: char| !ident(c))
        .map_or(code.len(), |k| j + k);
    let prefix = code[j..end].to_string();
    if !code[end..].starts_with('{') {
        return (vec![prefix.trim_end_matches(':').to_string()], end);
    }
    // A group: split its members at top-level commas.
    let mut depth = 0;
    let mut close = code.len();
    let mut members = Vec::new();
    let mut member_start = end + 1;
    for (k, ch) in code[end..].char_indices() {
        let at = end + k;
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    members.push(member_start..at);
                    close = at + 1;
                    break;
                }
            }
            ',' if depth == 1 => {
                members.push(member_start..at);
                member_start = at + 1;
            }
            _ => {}
        }
    }
    let mut chains = Vec::new();
    for m in members {
        let text = &code[m.clone()];
        let lead = text.len() - text.trim_start().len();
        if text.trim().is_empty() {
            continue;
        }
        let (inner, _) = chains_at(code, m.start + lead);
        for c in inner {
            chains.push(format!("{prefix}{}", c.split(" as ").next().unwrap()));
        }
    }
    (chains, close)
}

struct Graph {
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    via_lib: Vec<String>,
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")));
    let lib = src.join("lib.rs");
    let mut g = Graph {
        edges: BTreeMap::new(),
        via_lib: Vec::new(),
    };
    for f in &files {
        let me = module_of(src, f);
        let code = code_of(&fs::read_to_string(f).unwrap());
        let mut targets = BTreeSet::new();
        for (head, chains) in paths(&code) {
            let start: Vec<String> = if head.ends_with("crate") {
                Vec::new()
            } else {
                let ups = head.matches("super").count();
                me[..me.len().saturating_sub(ups)].to_vec()
            };
            for chain in chains {
                let segs: Vec<String> = chain
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                let found = (0..=segs.len()).rev().find_map(|k| {
                    let mut p = start.clone();
                    p.extend_from_slice(&segs[..k]);
                    file_of(src, &p)
                });
                let Some(target) = found else { continue };
                if &target == f {
                    continue;
                }
                if target == lib && !segs.is_empty() && file_of(src, &segs[..1]).is_none() {
                    g.via_lib.push(format!(
                        "{}: {head}::{chain}",
                        f.strip_prefix(src).unwrap().display()
                    ));
                }
                // lib.rs re-exports everything by design: an edge to it is reported above as
                // an import through lib.rs (when it names an item), never as a cycle.
                if target != lib {
                    targets.insert(target);
                }
            }
        }
        g.edges.insert(f.clone(), targets);
    }
    g
}

/// Strongly connected groups of more than one file (Tarjan), `lib.rs` left out: it re-exports
/// everything by design.
fn cycles(g: &Graph, lib: &Path) -> Vec<Vec<PathBuf>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn strong<'a>(t: &mut T<'a>, v: &'a PathBuf) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.edges.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.edges.get_key_value(w) else {
                continue;
            };
            if !t.index.contains_key(w) {
                strong(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            t.out.push(comp);
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.edges.keys() {
        if !t.index.contains_key(v) {
            strong(&mut t, v);
        }
    }
    t.out
        .into_iter()
        .map(|c| c.into_iter().filter(|f| f != lib).collect::<Vec<_>>())
        .filter(|c| c.len() > 1)
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_import_cycle_between_files() {
    let src = root().join("src");
    let g = graph(&src);
    assert!(g.edges.len() > 20, "read {} files", g.edges.len());
    let found = cycles(&g, &src.join("lib.rs"));
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let mut names: Vec<String> = c
                .iter()
                .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
                .collect();
            names.sort();
            names.join(" ↔ ")
        })
        .collect();
    assert!(shown.is_empty(), "import cycles:\n{}", shown.join("\n"));
}

#[test]
fn no_internal_import_through_lib_rs() {
    let g = graph(&root().join("src"));
    assert!(
        g.via_lib.is_empty(),
        "import these from their defining module, not through lib.rs's re-exports:\n{}",
        g.via_lib.join("\n")
    );
}

#[test]
fn no_file_over_600_lines_of_code() {
    let mut long = Vec::new();
    for dir in ["src", "tests", "benches"] {
        let mut files = Vec::new();
        rust_files(&root().join(dir), &mut files);
        for f in files {
            let code = code_of(&fs::read_to_string(&f).unwrap());
            let n = code.lines().filter(|l| !l.trim().is_empty()).count();
            if n > MAX_CODE_LINES {
                long.push(format!(
                    "{}: {n}",
                    f.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_CODE_LINES} lines of code (split them by concept):\n{}",
        long.join("\n")
    );
}

/// The reader itself: a cycle and an import through lib.rs in a made-up crate are found.
#[test]
fn the_reader_finds_a_cycle_and_a_lib_import() {
    let dir = std::env::temp_dir().join(format!("tend-arch-{}", std::process::id()));
    let src = dir.join("src");
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("lib.rs"), "mod a; mod b; pub use a::A;").unwrap();
    fs::write(src.join("a.rs"), "use crate::b::{c::C, B};\npub struct A;").unwrap();
    fs::write(
        src.join("b/mod.rs"),
        "mod c; pub struct B; fn f() { crate::A; }",
    )
    .unwrap();
    fs::write(
        src.join("b/c.rs"),
        "use super::super::a::A; // crate::b\n#[cfg(test)]\nmod t { use crate::x::Y; }\npub struct C;",
    )
    .unwrap();
    let g = graph(&src);
    let found = cycles(&g, &src.join("lib.rs"));
    assert_eq!(found.len(), 1, "{:?}", g.edges);
    assert_eq!(found[0].len(), 2, "a.rs ↔ b/c.rs: {found:?}");
    assert_eq!(g.via_lib, ["b/mod.rs: crate::A"]);
    fs::remove_dir_all(&dir).unwrap();
}
