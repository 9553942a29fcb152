//! Golden tests: `testdata/<case>.in.yaml` → `testdata/<case>.out.yaml`.
//!
//! The output lists the objects translation added or changed, and every status. The static
//! `htnn-http-filter` EnvoyFilter and an empty consumer carrier are left out except in the
//! `base` case. Run with `UPDATE_GOLDEN=1` to rewrite the expected files after a deliberate
//! change, then review the diff.

use std::collections::BTreeMap;
use std::path::Path;

use htnn_translators::model::{Object, ObjectRef};
use htnn_translators::{Options, parse, render, translate};

fn load(path: &Path) -> BTreeMap<ObjectRef, Object> {
    let text = std::fs::read_to_string(path).unwrap();
    parse::parse_file(&text, false)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .map(|o| (o.id.clone(), o))
        .collect()
}

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    cases.sort();
    let count = cases.len();
    let mut failures = Vec::new();
    for input in cases {
        let case = input
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".in.yaml")
            .to_string();
        let objects = load(&input);
        let output = translate(&objects, &Options::default());
        // Deterministic: translating twice gives the same result.
        assert_eq!(
            output,
            translate(&objects, &Options::default()),
            "{case}: not deterministic"
        );
        let keep_all = case == "base";
        let has_consumers = output.statuses.keys().any(|k| k.kind == "Consumer");
        let got = render::to_yaml(&output, |id, obj| {
            let noise =
                id.name == "htnn-http-filter" || (id.name == "htnn-consumers" && !has_consumers);
            (keep_all || !noise) && objects.get(id) != Some(obj)
        });
        let expected_path = dir.join(format!("{case}.out.yaml"));
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != got {
            failures.push(format!(
                "--- {case}: expected {}\n{expected}\n+++ got\n{got}",
                expected_path.display()
            ));
        }
    }
    assert!(
        count >= 25,
        "expected at least 25 golden cases, found {count}"
    );
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
