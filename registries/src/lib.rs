//! Service registries (Nacos, Consul) that emit ServiceEntries. Not implemented yet.
