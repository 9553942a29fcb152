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
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::LoadError;
use crate::model::{Object, ObjectRef};
use htnn_translators::Change;
use htnn_translators::parse::parse_file;

#[derive(Default)]
struct FileState {
    digest: [u8; 32],
    /// Last good state of every object this file defines.
    objects: BTreeMap<ObjectRef, Arc<Object>>,
    errors: Vec<LoadError>,
}

/// The directory's objects, kept up to date file by file: a reload re-parses only the files
/// whose content changed and reports only the objects that changed.
pub struct DirSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Files defining each object; the first (in path order) wins, the others are reported.
    definers: BTreeMap<ObjectRef, BTreeSet<PathBuf>>,
    /// What the last reload reported for each object.
    current: BTreeMap<ObjectRef, Arc<Object>>,
}

/// What one reload found.
pub struct Reload {
    /// Objects added, changed or removed since the previous reload.
    pub changes: Vec<Change>,
    /// Every current error (not only new ones).
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
            definers: BTreeMap::new(),
            current: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The objects as of the last reload.
    pub fn objects(&self) -> &BTreeMap<ObjectRef, Arc<Object>> {
        &self.current
    }

    /// Re-reads the directory. Unchanged files (same content hash) are not parsed again.
    /// Fails only when the directory itself cannot be listed; the previous state stays then.
    pub fn reload(&mut self) -> std::io::Result<Reload> {
        let mut present = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if is_config_file(&path) {
                present.insert(path);
            }
        }
        let mut touched: BTreeSet<ObjectRef> = BTreeSet::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            let state = self.files.remove(&path).expect("listed");
            for id in state.objects.into_keys() {
                undefine(&mut self.definers, &id, &path);
                touched.insert(id);
            }
        }
        for path in present {
            let state = self.files.entry(path.clone()).or_default();
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let digest: [u8; 32] = Sha256::digest(&bytes).into();
                    if digest != state.digest || state.objects.is_empty() && state.errors.is_empty()
                    {
                        state.digest = digest;
                        let before = std::mem::take(&mut state.objects);
                        load_file(&path, &bytes, &before, state);
                        let after = &state.objects;
                        let changed: Vec<ObjectRef> = before
                            .keys()
                            .chain(after.keys())
                            .filter(|id| before.get(*id) != after.get(*id))
                            .cloned()
                            .collect();
                        let (added, removed): (Vec<&ObjectRef>, Vec<&ObjectRef>) = (
                            after
                                .keys()
                                .filter(|id| !before.contains_key(*id))
                                .collect(),
                            before
                                .keys()
                                .filter(|id| !after.contains_key(*id))
                                .collect(),
                        );
                        for id in added {
                            self.definers
                                .entry(id.clone())
                                .or_default()
                                .insert(path.clone());
                        }
                        for id in removed {
                            undefine(&mut self.definers, id, &path);
                        }
                        touched.extend(changed);
                    }
                }
                // Unreadable (e.g. removed between listing and reading): keep the last state.
                Err(e) => {
                    state.errors = vec![file_error(&path, format!("cannot read: {e}"))];
                }
            }
        }
        let mut changes = Vec::new();
        for id in touched {
            let winner = self
                .definers
                .get(&id)
                .and_then(|files| files.first())
                .map(|path| self.files[path].objects[&id].clone());
            match winner {
                Some(obj) => {
                    if self.current.get(&id) != Some(&obj) {
                        self.current.insert(id, obj.clone());
                        changes.push(Change::Upsert(obj));
                    }
                }
                None => {
                    if self.current.remove(&id).is_some() {
                        changes.push(Change::Delete(id));
                    }
                }
            }
        }
        Ok(Reload {
            changes,
            errors: self.errors(),
        })
    }

    /// Every file's errors, then objects defined in more than one file.
    fn errors(&self) -> Vec<LoadError> {
        let mut errors: Vec<LoadError> = self
            .files
            .values()
            .flat_map(|s| s.errors.iter().cloned())
            .collect();
        for (id, files) in self.definers.iter().filter(|(_, f)| f.len() > 1) {
            let mut files = files.iter();
            let first = files.next().expect("more than one");
            for path in files {
                errors.push(LoadError {
                    file: path.display().to_string(),
                    document: None,
                    object: Some(id.to_string()),
                    reason: format!(
                        "duplicate: already defined in {}; this copy is ignored",
                        first.display()
                    ),
                });
            }
        }
        errors
    }
}

/// `path` no longer defines `id`.
fn undefine(definers: &mut BTreeMap<ObjectRef, BTreeSet<PathBuf>>, id: &ObjectRef, path: &Path) {
    if let Some(set) = definers.get_mut(id) {
        set.remove(path);
        if set.is_empty() {
            definers.remove(id);
        }
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

/// Parses a file into `state`; `before` is what it held (the last good states).
fn load_file(
    path: &Path,
    bytes: &[u8],
    before: &BTreeMap<ObjectRef, Arc<Object>>,
    state: &mut FileState,
) {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            state.errors = vec![file_error(path, format!("not UTF-8: {e}"))];
            state.objects = before.clone();
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
                // An unchanged object keeps its allocation, so it compares equal cheaply.
                let obj = match before.get(&obj.id) {
                    Some(old) if **old == obj => old.clone(),
                    _ => Arc::new(obj),
                };
                objects.insert(obj.id.clone(), obj);
            }
            Err(e) => {
                match &e.id {
                    Some(id) => {
                        if let Some(old) = before.get(id.as_ref()) {
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
        for (id, old) in before {
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

    fn timeout_of(src: &DirSource) -> String {
        let vs = src
            .objects()
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
        assert_eq!(src.objects().len(), 2);
        assert_eq!(v.changes.len(), 2);
        assert!(v.errors.is_empty());
        // Nothing changed: nothing reported.
        assert!(src.reload().unwrap().changes.is_empty());

        // The VS becomes invalid, the gateway is deleted: VS keeps 5s, gateway goes.
        std::fs::write(&file, VS.replace("TIMEOUT", "5parsecs")).unwrap();
        let v = src.reload().unwrap();
        assert_eq!(src.objects().len(), 1);
        assert_eq!(timeout_of(&src), "5s");
        assert!(
            matches!(&v.changes[..], [Change::Delete(id)] if id.kind == "Gateway"),
            "{:?}",
            v.changes
        );
        assert_eq!(v.errors.len(), 1);
        assert_eq!(v.errors[0].document, Some(0));
        assert_eq!(
            v.errors[0].object.as_deref(),
            Some("VirtualService default/vs")
        );

        std::fs::write(&file, VS.replace("TIMEOUT", "1m")).unwrap();
        let v = src.reload().unwrap();
        assert_eq!(timeout_of(&src), "60s");
        assert!(v.errors.is_empty());
        assert_eq!(v.changes.len(), 1);
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
        assert_eq!(src.objects().len(), 2);
        assert!(v.changes.is_empty());
        assert_eq!(v.errors.len(), 1);
        std::fs::remove_file(&file).unwrap();
        let v = src.reload().unwrap();
        assert!(src.objects().is_empty() && v.errors.is_empty());
        assert_eq!(v.changes.len(), 2);
    }

    #[test]
    fn duplicates_across_files_first_wins_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), VS.replace("TIMEOUT", "1s")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), VS.replace("TIMEOUT", "2s")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
        let mut src = DirSource::new(dir.path());
        let v = src.reload().unwrap();
        assert_eq!(timeout_of(&src), "1s");
        assert_eq!(v.errors.len(), 1);
        assert!(v.errors[0].reason.contains("duplicate"));
        // The first copy goes: the second one takes over.
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let v = src.reload().unwrap();
        assert_eq!(timeout_of(&src), "2s");
        assert!(v.errors.is_empty());
        assert!(
            matches!(&v.changes[..], [Change::Upsert(_)]),
            "{:?}",
            v.changes
        );
    }
}
