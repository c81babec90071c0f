//! The house reads bottom-up: `src/lib.rs` lists the layers in order, and
//! no file of a layer names a layer listed after it (`crate::<layer>`).

use std::path::{Path, PathBuf};

fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

fn files(layer: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let single = src.join(format!("{layer}.rs"));
    if single.exists() {
        out.push(single);
    }
    let mut dirs = vec![src.join(layer)];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn no_layer_imports_a_higher_one() {
    let order = layers();
    assert!(order.len() >= 10, "src/lib.rs lists the layers: {order:?}");
    let mut violations = Vec::new();
    for (i, layer) in order.iter().enumerate() {
        let found = files(layer);
        assert!(!found.is_empty(), "layer `{layer}` has no files");
        for file in found {
            let text = std::fs::read_to_string(&file).unwrap();
            for higher in &order[i + 1..] {
                let needle = format!("crate::{higher}");
                let named = text.match_indices(&needle).any(|(at, _)| {
                    let next = text[at + needle.len()..].chars().next();
                    !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if named {
                    violations.push(format!("{} names `{needle}`", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}
