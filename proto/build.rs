//! Compiles every `.proto` under `protos/` with protox (no system protoc), generates prost
//! types, and adds proto3-JSON serde impls with pbjson.

use std::error::Error;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn escape(segment: &str) -> String {
    match segment {
        "type" | "match" | "ref" | "mod" | "use" | "struct" | "enum" | "fn" | "in" => {
            format!("r#{segment}")
        }
        other => other.to_string(),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from("protos");
    println!("cargo:rerun-if-changed=protos");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("descriptor.bin"), &descriptor_bytes)?;

    let packages: Vec<String> = fds
        .file
        .iter()
        .filter_map(|f| f.package.clone())
        .filter(|p| !p.starts_with("google."))
        .collect();

    prost_build::Config::new()
        .btree_map(["."])
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        // Ordered-map versions so that encoding is deterministic (see src/wkt.rs).
        .extern_path(".google.protobuf.Struct", "crate::wkt::Struct")
        .extern_path(".google.protobuf.Value", "crate::wkt::Value")
        .extern_path(".google.protobuf.ListValue", "crate::wkt::ListValue")
        .include_file("_includes.rs")
        .compile_fds(fds)?;

    let selectors: Vec<String> = packages.iter().map(|p| format!(".{p}")).collect();
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .btree_map(["."])
        .build(&selectors)?;

    // prost's include file only pulls in `<pkg>.rs`; append the pbjson impls to each.
    let mut seen = std::collections::BTreeSet::new();
    for pkg in packages {
        if !seen.insert(pkg.clone()) {
            continue;
        }
        // prost escapes keyword segments in file names (`xds.r#type.v3.rs`); pbjson does too.
        let file = pkg.split('.').map(escape).collect::<Vec<_>>().join(".");
        let rs = out.join(format!("{file}.rs"));
        let mut body = std::fs::read_to_string(&rs)?;
        body.push_str(&format!("\ninclude!(\"{file}.serde.rs\");\n"));
        std::fs::write(&rs, body)?;
    }
    Ok(())
}
