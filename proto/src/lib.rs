//! Wire-compatible protobuf types for istio's MCP envelope and every config kind istiod
//! requests over MCP, generated from our own `.proto` files (see `protos/`).
//!
//! Each message implements `serde::Deserialize`/`Serialize` in proto3 JSON (pbjson), so a
//! Kubernetes-style `spec` parses straight into it. Use [`spec`] to parse as users write
//! YAML (durations like `1h30m`, paths in errors).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

pub mod spec;
pub mod wkt;

/// The compiled `FileDescriptorSet` of every message in this crate.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
