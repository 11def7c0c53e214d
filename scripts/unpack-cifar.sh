#!/usr/bin/env bash
# Unpacks the official CIFAR-10 and CIFAR-100 binary archives (`SRC/cifar-10-binary.tar.xz`,
# `SRC/cifar-100-binary.tar.xz`) into DEST and verifies every file against the SHA-256 sums each
# folder carries. A folder that is already there and verifies is kept; one that fails is unpacked
# again; an archive whose own SHA-256 differs from `SRC/SHA256SUMS` is refused.
# Usage: scripts/unpack-cifar.sh SRC DEST
set -euo pipefail
src=$(cd "$1" && pwd)
dest=$2
mkdir -p "$dest"

verified() { [ -f "$1/SHA256SUMS" ] && (cd "$1" && sha256sum --quiet -c SHA256SUMS) >/dev/null 2>&1; }

for pair in cifar-10-binary.tar.xz:cifar-10-batches-bin cifar-100-binary.tar.xz:cifar-100-binary; do
    archive=${pair%%:*}
    folder=${pair##*:}
    if verified "$dest/$folder"; then
        echo "unpack-cifar: $dest/$folder present and verified"
        continue
    fi
    if [ ! -f "$src/$archive" ]; then
        echo "unpack-cifar: $src/$archive not found" >&2
        exit 1
    fi
    if [ -f "$src/SHA256SUMS" ]; then
        (cd "$src" && grep " $archive\$" SHA256SUMS | sha256sum --quiet -c -) || {
            echo "unpack-cifar: $src/$archive does not match $src/SHA256SUMS" >&2
            exit 1
        }
    fi
    rm -rf "${dest:?}/$folder"
    tar -xJf "$src/$archive" -C "$dest"
    verified "$dest/$folder" || {
        echo "unpack-cifar: $dest/$folder fails its SHA256SUMS after unpacking" >&2
        exit 1
    }
    echo "unpack-cifar: unpacked and verified $dest/$folder"
done
