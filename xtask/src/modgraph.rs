//! The daemon's top-level module graph must stay acyclic (`cargo xtask test` checks it).
//!
//! Reads every top-level module of `velocache/src` (a `name.rs` or a `name/` directory), takes
//! the other top-level modules each one names through `crate::…` paths — in `use crate::{…}`
//! groups too — leaving out comments and test code (`*tests.rs`, `testutil.rs`, and
//! `#[cfg(test)] mod tests { … }` blocks), and reports every strongly connected component of
//! more than one module, with the files and names that tie it. A textual reading, like the
//! module graphs of `cargo-modules`: enough for imports, which is what makes the cycles.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// Module → (module it uses → the files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Fail with the cycles found among the top-level modules under `src`.
pub fn check(src: &Path) -> Result<()> {
    let graph = read(src)?;
    let cycles = cycles(&graph);
    if cycles.is_empty() {
        println!("module graph: {} top-level modules, no cycle", graph.len());
        return Ok(());
    }
    let mut msg = String::from("the top-level modules of velocache/src form import cycles:\n");
    for c in &cycles {
        msg.push_str(&format!("  cycle: {}\n", c.join(" ⇄ ")));
        for from in c {
            for (to, files) in &graph[from] {
                if c.contains(to) {
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    msg.push_str(&format!("    {from} -> {to} ({})\n", files.join(", ")));
                }
            }
        }
    }
    bail!("{msg}")
}

fn read(src: &Path) -> Result<Graph> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        let module = path.is_dir()
            || (path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main");
        if module {
            modules.insert(name.to_string(), path.clone());
        }
    }
    let mut graph = Graph::new();
    for (name, path) in &modules {
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let rel = file
                .strip_prefix(src)
                .unwrap_or(&file)
                .display()
                .to_string();
            for used in crate_paths(&without_tests(&text)) {
                if used != *name && modules.contains_key(&used) {
                    uses.entry(used).or_default().insert(rel.clone());
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    Ok(graph)
}

/// The non-test Rust files of a module.
fn files(path: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(out);
    }
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(files(&p)?);
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
            && name.ends_with(".rs")
            && !name.ends_with("tests.rs")
            && name != "testutil.rs"
        {
            out.push(p);
        }
    }
    Ok(out)
}

/// The text without comment lines and without a trailing `#[cfg(test)] mod tests { … }`.
fn without_tests(text: &str) -> String {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    match code.find("#[cfg(test)]\nmod tests {") {
        Some(i) => code[..i].to_string(),
        None => code,
    }
}

/// Top-level module names reached through `crate::name` or `use crate::{name…, …}`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level names of a brace group, at depth 0.
            let (mut depth, mut token, mut end) = (0usize, String::new(), group.len());
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = j;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_head(&token, &mut out);
                        token.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || c != '{' {
                    token.push(c);
                }
            }
            push_head(&token, &mut out);
            rest = &group[end..];
        } else {
            push_head(rest, &mut out);
        }
    }
    out
}

/// The first path segment of `s`, if it is an identifier.
fn push_head(s: &str, out: &mut BTreeSet<String>) {
    let head: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if !head.is_empty() && head != "self" && head != "super" {
        out.insert(head);
    }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                if let Some(lv) = s.low.get_mut(v) {
                    *lv = (*lv).min(lw);
                }
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                if let Some(lv) = s.low.get_mut(v) {
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_paths_read_groups_and_plain_paths() {
        let code = "use crate::{a::{X, Y}, b, c::d::E};\nfn f() { crate::e::g(); }";
        let got: Vec<String> = crate_paths(code).into_iter().collect();
        assert_eq!(got, ["a", "b", "c", "e"]);
    }

    #[test]
    fn comments_and_test_modules_do_not_count() {
        let code =
            "//! see crate::x\nuse crate::a::B;\n#[cfg(test)]\nmod tests {\n use crate::z::Q;\n}";
        let got: Vec<String> = crate_paths(&without_tests(code)).into_iter().collect();
        assert_eq!(got, ["a"]);
    }

    #[test]
    fn a_cycle_is_reported_with_the_files_that_tie_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lib.rs"),
            "pub mod a; pub mod b; pub mod c;",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.rs"), "use crate::b::X;").unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/mod.rs"), "pub struct X;").unwrap();
        std::fs::write(dir.path().join("b/more.rs"), "use crate::{a, c};").unwrap();
        std::fs::write(dir.path().join("c.rs"), "").unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cycle: a ⇄ b"), "{err}");
        assert!(err.contains("b -> a (b/more.rs)"), "{err}");
        std::fs::write(dir.path().join("b/more.rs"), "use crate::c;").unwrap();
        check(dir.path()).unwrap();
    }
}
