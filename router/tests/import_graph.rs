//! No import circles between the router's top-level modules (house style): the pipeline sees
//! the channels only through `outbound`, and nothing it uses reaches back to it. Read from the
//! sources (`crate::<module>` outside comments and test modules), so a new circle fails here
//! rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::<name>` references of one file, test modules and comments left out.
fn references(source: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        for (i, _) in line.match_indices("crate::") {
            let name: String = line[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn collect(dir: &Path, top: Option<&str>, graph: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        let module = top.map_or(name.clone(), str::to_string);
        if path.is_dir() {
            collect(&path, Some(&module), graph);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if matches!(module.as_str(), "lib" | "main" | "bin") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("read source");
            let deps = graph.entry(module.clone()).or_default();
            deps.extend(references(&source).into_iter().filter(|d| *d != module));
        }
    }
}

/// Every module `from` reaches through the graph.
fn reach(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for d in graph.get(&m).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn the_router_modules_import_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    collect(&src, None, &mut graph);
    assert!(
        graph
            .get("pipeline")
            .is_some_and(|d| d.contains("outbound")),
        "the reader sees the pipeline's imports: {graph:#?}"
    );
    let circles: Vec<(String, String)> = graph
        .iter()
        .flat_map(|(m, deps)| deps.iter().map(move |d| (m.clone(), d.clone())))
        .filter(|(m, d)| reach(&graph, d).contains(m))
        .collect();
    assert!(
        circles.is_empty(),
        "modules that import each other (directly or through others): {circles:?}"
    );
    assert!(
        !graph["pipeline"].contains("channels"),
        "the pipeline knows the channels only through `outbound`"
    );
}
