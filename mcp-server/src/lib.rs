//! MCP-over-xDS server feeding istiod.
