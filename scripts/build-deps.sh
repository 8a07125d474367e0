#!/usr/bin/env bash
# Installs (when missing) what building Vigil needs beyond Rust: the OpenSSL
# headers and pkg-config that librdkafka's TLS and SASL are built against
# (Debian's libssl-dev). Everything else Vigil's own code uses is Rust
# (rustls for TLS). Idempotent.
set -euo pipefail

PACKAGES=(libssl-dev pkg-config)

log() { printf 'build-deps: %s\n' "$*" >&2; }

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

log "installing ${missing[*]} from Debian's packages"
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    log "ERROR: need root (or sudo) to install ${missing[*]}"
    exit 1
fi
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
