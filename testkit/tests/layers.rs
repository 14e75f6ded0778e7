//! The workspace's layers, checked from its manifests and its sources:
//!
//! - crates depend only downwards: the core (`pipeline`) on no other crate of the workspace,
//!   the components (`receivers`, `processors`, `exporters`) on the core only, the binary
//!   (`agent`) on all of those; the test kit and the benchmarks sit beside them;
//! - no file of the core names a component crate;
//! - no two modules of a target import each other, directly or in a ring (`crate::a` uses
//!   `crate::b` and `crate::b` uses `crate::a`). A module is a file; `use` items and paths in
//!   code count (`crate::`, `super::`, `self::`), paths inside macro calls do not.
//!
//! The workspace comes from `cargo metadata`; every target's module tree is followed from its
//! root through its `mod` declarations and parsed with `syn`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use syn::visit::Visit;

/// Which workspace crates each may depend on (normal, build and dev dependencies alike).
const ALLOWED: &[(&str, &[&str])] = &[
    ("periscope-pipeline", &[]),
    (
        "periscope-receivers",
        &["periscope-pipeline", "periscope-testkit"],
    ),
    (
        "periscope-processors",
        &["periscope-pipeline", "periscope-testkit"],
    ),
    (
        "periscope-exporters",
        &["periscope-pipeline", "periscope-testkit"],
    ),
    (
        "periscope",
        &[
            "periscope-pipeline",
            "periscope-receivers",
            "periscope-processors",
            "periscope-exporters",
            "periscope-testkit",
        ],
    ),
    ("periscope-testkit", &["periscope-pipeline"]),
    (
        "periscope-bench",
        &[
            "periscope",
            "periscope-pipeline",
            "periscope-receivers",
            "periscope-testkit",
        ],
    ),
];

/// The component crates, which the core must never name.
const COMPONENTS: &[&str] = &[
    "periscope_receivers",
    "periscope_processors",
    "periscope_exporters",
    "periscope_testkit",
];

fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn packages(meta: &Value) -> Vec<&Value> {
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .collect()
}

fn name(v: &Value) -> &str {
    v["name"].as_str().expect("a name")
}

#[test]
fn crates_depend_only_downwards() {
    let meta = metadata();
    let members: BTreeSet<&str> = packages(&meta).into_iter().map(name).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for p in packages(&meta) {
        let Some(ok) = allowed.get(name(p)) else {
            wrong.push(format!(
                "{} is not in ALLOWED: say which crates it may depend on",
                name(p)
            ));
            continue;
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = name(d);
            if members.contains(dep) && !ok.contains(&dep) {
                wrong.push(format!("{} depends on {dep}", name(p)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_core_names_no_component() {
    let meta = metadata();
    let core = packages(&meta)
        .into_iter()
        .find(|p| name(p) == "periscope-pipeline")
        .expect("the pipeline crate");
    let dir = Path::new(core["manifest_path"].as_str().expect("manifest"))
        .parent()
        .expect("dir");
    let mut wrong = Vec::new();
    for file in rust_files(dir) {
        let text = std::fs::read_to_string(&file).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if COMPONENTS.iter().any(|c| code.contains(c)) || code.contains("periscope::") {
                wrong.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the core names a component:\n{}",
        wrong.join("\n")
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if path.file_name().is_some_and(|n| n != "target") {
                out.extend(rust_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_modules_import_each_other() {
    let meta = metadata();
    let mut rings = Vec::new();
    for p in packages(&meta) {
        let root = Path::new(p["manifest_path"].as_str().expect("manifest"))
            .parent()
            .expect("dir")
            .to_path_buf();
        for t in p["targets"].as_array().into_iter().flatten() {
            let src = PathBuf::from(t["src_path"].as_str().expect("src_path"));
            let tree = ModuleTree::read(&src);
            for ring in tree.rings() {
                rings.push(format!("{}: {}", name(p), tree.describe(&ring, &root)));
            }
        }
    }
    assert!(
        rings.is_empty(),
        "modules that import each other:\n{}",
        rings.join("\n")
    );
}

/// The modules of one target: module path → the file that defines it, and which files each
/// file imports from.
#[derive(Default)]
struct ModuleTree {
    files: BTreeMap<Vec<String>, PathBuf>,
    imports: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// Import paths as written, per file, resolved later (all modules must be known first).
    pending: Vec<(PathBuf, Vec<String>, Vec<String>)>,
}

impl ModuleTree {
    fn read(root: &Path) -> ModuleTree {
        let mut tree = ModuleTree::default();
        tree.load(root, Vec::new(), children_dir(root));
        let pending = std::mem::take(&mut tree.pending);
        for (file, module, path) in pending {
            if let Some(target) = tree.resolve(&module, &path) {
                if target != file {
                    tree.imports.entry(file).or_default().insert(target);
                }
            }
        }
        tree
    }

    /// Reads `file`, the module `module`, whose `mod x;` children live in `dir`.
    fn load(&mut self, file: &Path, module: Vec<String>, dir: PathBuf) {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.files.insert(module.clone(), file.to_path_buf());
        self.items(file, &module, &dir, &ast.items);
    }

    fn items(&mut self, file: &Path, module: &[String], dir: &Path, items: &[syn::Item]) {
        for item in items {
            if let syn::Item::Mod(m) = item {
                let mut child = module.to_vec();
                child.push(m.ident.to_string());
                match &m.content {
                    Some((_, inner)) => {
                        // An inline module is part of its file.
                        self.files.insert(child.clone(), file.to_path_buf());
                        self.items(file, &child, &dir.join(m.ident.to_string()), inner);
                    }
                    None => {
                        let path = path_attribute(m)
                            .map(|p| file.parent().expect("dir").join(p))
                            .unwrap_or_else(|| {
                                let flat = dir.join(format!("{}.rs", m.ident));
                                if flat.exists() {
                                    flat
                                } else {
                                    dir.join(m.ident.to_string()).join("mod.rs")
                                }
                            });
                        let next = children_dir(&path);
                        self.load(&path, child, next);
                    }
                }
                continue;
            }
            let mut v = Paths::default();
            v.visit_item(item);
            for p in v.paths {
                self.pending.push((file.to_path_buf(), module.to_vec(), p));
            }
        }
    }

    /// The file of the module that `path` (written in `module`) names: the longest prefix of
    /// it that is a module. `None` for paths outside the crate.
    fn resolve(&self, module: &[String], path: &[String]) -> Option<PathBuf> {
        let mut at: Vec<String> = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("self") => module.to_vec(),
            Some("super") => module.to_vec(),
            _ => return None,
        };
        let mut rest = &path[1..];
        if path[0] == "super" {
            at.pop();
            while rest.first().is_some_and(|s| s == "super") {
                at.pop();
                rest = &rest[1..];
            }
        }
        let mut best = self.files.get(&at).cloned();
        for seg in rest {
            at.push(seg.clone());
            match self.files.get(&at) {
                Some(f) => best = Some(f.clone()),
                None => break,
            }
        }
        best
    }

    /// Sets of files that import each other (strongly connected, more than one file).
    fn rings(&self) -> Vec<BTreeSet<PathBuf>> {
        let files: Vec<&PathBuf> = self.imports.keys().collect();
        let reach = |from: &PathBuf| -> BTreeSet<PathBuf> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from.clone()];
            while let Some(f) = todo.pop() {
                for next in self.imports.get(&f).into_iter().flatten() {
                    if seen.insert(next.clone()) {
                        todo.push(next.clone());
                    }
                }
            }
            seen
        };
        let reaches: BTreeMap<&PathBuf, BTreeSet<PathBuf>> =
            files.iter().map(|f| (*f, reach(f))).collect();
        let mut rings: Vec<BTreeSet<PathBuf>> = Vec::new();
        for f in &files {
            if !reaches[f].contains(*f) || rings.iter().any(|r| r.contains(*f)) {
                continue;
            }
            let ring: BTreeSet<PathBuf> = reaches[f]
                .iter()
                .filter(|g| reaches.get(g).is_some_and(|r| r.contains(*f)))
                .cloned()
                .collect();
            rings.push(ring);
        }
        rings
    }

    /// The imports inside a ring, for the failure message.
    fn describe(&self, ring: &BTreeSet<PathBuf>, root: &Path) -> String {
        let short = |f: &Path| f.strip_prefix(root).unwrap_or(f).display().to_string();
        let mut arrows = Vec::new();
        for f in ring {
            for g in self.imports.get(f).into_iter().flatten() {
                if ring.contains(g) {
                    arrows.push(format!("{} → {}", short(f), short(g)));
                }
            }
        }
        arrows.join(", ")
    }
}

/// Where the `mod x;` children of the module in `file` live.
fn children_dir(file: &Path) -> PathBuf {
    let dir = file.parent().expect("a file in a folder").to_path_buf();
    match file.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => dir,
        _ => dir.join(file.file_stem().expect("a name")),
    }
}

fn path_attribute(m: &syn::ItemMod) -> Option<String> {
    m.attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Every `crate::`/`super::`/`self::` path of an item: in `use` trees and in code.
#[derive(Default)]
struct Paths {
    paths: Vec<Vec<String>>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.push(prefix, Some(n.ident.to_string())),
            syn::UseTree::Rename(r) => self.push(prefix, Some(r.ident.to_string())),
            syn::UseTree::Glob(_) => self.push(prefix, None),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn push(&mut self, prefix: &[String], last: Option<String>) {
        let mut p = prefix.to_vec();
        p.extend(last.filter(|l| l != "self"));
        if p.first()
            .is_some_and(|s| s == "crate" || s == "super" || s == "self")
        {
            self.paths.push(p);
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Nested modules are walked by the tree, with their own module path.
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.push(&segs, None);
        syn::visit::visit_path(self, p);
    }
}
