#!/usr/bin/env bash
# Install rnacos (a Nacos-compatible server, crates.io) into a local cache, once.
#
# Usage: build-rnacos.sh [RNACOS_VERSION]
#   RNACOS_VERSION  crates.io version of rnacos; first argument or environment (the Makefile pins it).
#   CACHE_DIR       install root (default: $HOME/.cache/htnn/rnacos-$RNACOS_VERSION); the binary lands
#                   in $CACHE_DIR/bin/rnacos, and $CACHE_DIR/rnacos.version records the installed version.
#   RNACOS_FORCE=1  reinstall even if the cached binary matches.
#
# Idempotent: nothing is done when bin/rnacos exists and the stamp (or `rnacos --version`) says
# RNACOS_VERSION. A cold install takes about 11 minutes on 2 cores.
set -euo pipefail

version="${1:-${RNACOS_VERSION:-}}"
if [[ -z "$version" ]]; then
	echo "build-rnacos.sh: RNACOS_VERSION is not set (pass it as the first argument or in the environment)" >&2
	exit 2
fi

cache_dir="${CACHE_DIR:-$HOME/.cache/htnn/rnacos-$version}"
bin="$cache_dir/bin/rnacos"
stamp="$cache_dir/rnacos.version"

installed_version() {
	if [[ -f "$stamp" ]]; then
		cat "$stamp"
		return
	fi
	# No stamp (e.g. installed by hand): ask the binary. The output format is not relied on beyond
	# containing the version string.
	if out="$("$bin" --version 2>/dev/null)" && [[ "$out" == *"$version"* ]]; then
		echo "$version"
	fi
}

if [[ -x "$bin" && "${RNACOS_FORCE:-0}" != 1 ]]; then
	if [[ "$(installed_version)" == "$version" ]]; then
		echo "rnacos $version already installed: $bin"
		exit 0
	fi
	echo "build-rnacos.sh: $bin is not version $version; reinstalling" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
	echo "build-rnacos.sh: 'cargo' not found in PATH" >&2
	exit 1
fi

mkdir -p "$cache_dir"
rm -f "$stamp"
echo "installing rnacos $version into $cache_dir (about 11 minutes on 2 cores)"
start=$(date +%s)
# --locked uses rnacos's own Cargo.lock; --force replaces a binary of another version.
cargo install rnacos --version "$version" --locked --force --root "$cache_dir"
echo "$version" >"$stamp"
echo "rnacos $version installed in $(($(date +%s) - start))s: $bin"
