//! The directory source: every `*.yaml`, `*.yml` and `*.json` file directly inside a
//! directory (symlinks followed, so a mounted ConfigMap works), each possibly holding several
//! documents.
//!
//! Isolation of bad input: a document that fails to load never removes anything. If it still
//! names its object, that object keeps its last good state; if it cannot even be identified,
//! every object the file held before keeps its last good state. Only a successful load of a
//! file (or its deletion) removes the objects it no longer contains.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::LoadError;
use crate::model::{Object, ObjectRef};
use htnn_translators::parse::parse_file;

#[derive(Default)]
struct FileState {
    digest: [u8; 32],
    /// Last good state of every object this file defines.
    objects: BTreeMap<ObjectRef, Object>,
    errors: Vec<LoadError>,
}

pub struct DirSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

/// What one reload produced.
pub struct DirView {
    pub objects: BTreeMap<ObjectRef, Object>,
    pub errors: Vec<LoadError>,
}

fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
        && path.is_file()
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory. Unchanged files (same content hash) are not parsed again.
    /// Fails only when the directory itself cannot be listed; the previous state stays then.
    pub fn reload(&mut self) -> std::io::Result<DirView> {
        let mut present = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if is_config_file(&path) {
                present.insert(path);
            }
        }
        self.files.retain(|p, _| present.contains(p));
        for path in present {
            let state = self.files.entry(path.clone()).or_default();
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let digest: [u8; 32] = Sha256::digest(&bytes).into();
                    if digest != state.digest || state.objects.is_empty() && state.errors.is_empty()
                    {
                        state.digest = digest;
                        load_file(&path, &bytes, state);
                    }
                }
                // Unreadable (e.g. removed between listing and reading): keep the last state.
                Err(e) => {
                    state.errors = vec![file_error(&path, format!("cannot read: {e}"))];
                }
            }
        }
        Ok(self.view())
    }

    fn view(&self) -> DirView {
        let mut objects: BTreeMap<ObjectRef, Object> = BTreeMap::new();
        let mut origin: BTreeMap<ObjectRef, &Path> = BTreeMap::new();
        let mut errors = Vec::new();
        for (path, state) in &self.files {
            errors.extend(state.errors.iter().cloned());
            for (id, obj) in &state.objects {
                if let Some(first) = origin.get(id) {
                    errors.push(LoadError {
                        file: path.display().to_string(),
                        document: None,
                        object: Some(id.to_string()),
                        reason: format!(
                            "duplicate: already defined in {}; this copy is ignored",
                            first.display()
                        ),
                    });
                    continue;
                }
                origin.insert(id.clone(), path);
                objects.insert(id.clone(), obj.clone());
            }
        }
        DirView { objects, errors }
    }
}

fn file_error(path: &Path, reason: String) -> LoadError {
    LoadError {
        file: path.display().to_string(),
        document: None,
        object: None,
        reason,
    }
}

fn load_file(path: &Path, bytes: &[u8], state: &mut FileState) {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            state.errors = vec![file_error(path, format!("not UTF-8: {e}"))];
            return;
        }
    };
    let is_json = path.extension().is_some_and(|e| e == "json");
    let mut objects = BTreeMap::new();
    let mut errors = Vec::new();
    let mut unidentified = false;
    for result in parse_file(text, is_json) {
        match result {
            Ok(obj) => {
                if objects.contains_key(&obj.id) {
                    errors.push(LoadError {
                        file: path.display().to_string(),
                        document: None,
                        object: Some(obj.id.to_string()),
                        reason: "defined twice in this file; the first one is used".into(),
                    });
                    continue;
                }
                objects.insert(obj.id.clone(), obj);
            }
            Err(e) => {
                match &e.id {
                    Some(id) => {
                        if let Some(old) = state.objects.get(id.as_ref()) {
                            objects
                                .entry(id.as_ref().clone())
                                .or_insert_with(|| old.clone());
                        }
                    }
                    None => unidentified = true,
                }
                errors.push(LoadError {
                    file: path.display().to_string(),
                    document: Some(e.doc),
                    object: e.id.as_ref().map(ToString::to_string),
                    reason: e.reason,
                });
            }
        }
    }
    if unidentified {
        for (id, old) in &state.objects {
            objects.entry(id.clone()).or_insert_with(|| old.clone());
        }
    }
    state.objects = objects;
    state.errors = errors;
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [a.example.com]\n  http:\n  - timeout: TIMEOUT\n    route: [{destination: {host: a}}]\n";
    const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec: {selector: {istio: ingressgateway}}\n";

    fn timeout_of(view: &DirView) -> String {
        let vs = view
            .objects
            .values()
            .find(|o| o.id.kind == "VirtualService")
            .unwrap();
        vs.spec_json()["http"][0]["timeout"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn bad_document_keeps_last_good_state_of_its_object_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, format!("{}---\n{GW}", VS.replace("TIMEOUT", "5s"))).unwrap();
        let mut src = DirSource::new(dir.path());
        let v = src.reload().unwrap();
        assert_eq!(v.objects.len(), 2);
        assert!(v.errors.is_empty());

        // The VS becomes invalid, the gateway is deleted: VS keeps 5s, gateway goes.
        std::fs::write(&file, VS.replace("TIMEOUT", "5parsecs")).unwrap();
        let v = src.reload().unwrap();
        assert_eq!(v.objects.len(), 1);
        assert_eq!(timeout_of(&v), "5s");
        assert_eq!(v.errors.len(), 1);
        assert_eq!(v.errors[0].document, Some(0));
        assert_eq!(
            v.errors[0].object.as_deref(),
            Some("VirtualService default/vs")
        );

        std::fs::write(&file, VS.replace("TIMEOUT", "1m")).unwrap();
        let v = src.reload().unwrap();
        assert_eq!(timeout_of(&v), "60s");
        assert!(v.errors.is_empty());
    }

    #[test]
    fn unparseable_file_keeps_everything_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yml");
        std::fs::write(&file, format!("{}---\n{GW}", VS.replace("TIMEOUT", "5s"))).unwrap();
        let mut src = DirSource::new(dir.path());
        src.reload().unwrap();
        std::fs::write(&file, "kind: [unclosed\n").unwrap();
        let v = src.reload().unwrap();
        assert_eq!(v.objects.len(), 2);
        assert_eq!(v.errors.len(), 1);
        std::fs::remove_file(&file).unwrap();
        let v = src.reload().unwrap();
        assert!(v.objects.is_empty() && v.errors.is_empty());
    }

    #[test]
    fn duplicates_across_files_first_wins_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), VS.replace("TIMEOUT", "1s")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), VS.replace("TIMEOUT", "2s")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
        let v = DirSource::new(dir.path()).reload().unwrap();
        assert_eq!(timeout_of(&v), "1s");
        assert_eq!(v.errors.len(), 1);
        assert!(v.errors[0].reason.contains("duplicate"));
    }
}
