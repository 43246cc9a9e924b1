#!/usr/bin/env bash
# Installs segpool's C library for C programs, with a pkg-config file:
#
#   cargo build --release -p segpool-capi
#   capi/install.sh /usr/local                  # or any PREFIX; a third argument: DESTDIR staging
#
# PREFIX/lib/libsegpool.so.VERSION, with the links libsegpool.so.0 (the soname) and libsegpool.so
# PREFIX/lib/libsegpool.a
# PREFIX/include/segpool.h
# PREFIX/lib/pkgconfig/segpool.pc             generated here: prefix, version, flags
#
# A second argument names the directory holding the built libraries (default: target/release).
set -euo pipefail
usage() { echo "usage: capi/install.sh PREFIX [BUILD_DIR] [DESTDIR]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 3 ] || usage
case "$1" in -h|--help|'') usage ;; esac

here="$(cd "$(dirname "$0")" && pwd)"
prefix="$1"
build_dir="${2:-$here/../target/release}"
dest="${3:-}"
case "$prefix" in /*) ;; *) echo "capi/install.sh: PREFIX must be an absolute path, not '$prefix'" >&2; exit 2 ;; esac
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/Cargo.toml" | head -n1)"
abi=0   # the soname's number (capi/build.rs, ABI_VERSION)

for f in libsegpool_capi.so libsegpool_capi.a; do
    if [ ! -f "$build_dir/$f" ]; then
        echo "capi/install.sh: $build_dir/$f not found: run 'cargo build --release -p segpool-capi' first" >&2
        exit 1
    fi
done

lib="$dest$prefix/lib"
mkdir -p "$lib/pkgconfig" "$dest$prefix/include"
install -m 0755 "$build_dir/libsegpool_capi.so" "$lib/libsegpool.so.$version"
ln -sf "libsegpool.so.$version" "$lib/libsegpool.so.$abi"
ln -sf "libsegpool.so.$abi" "$lib/libsegpool.so"
install -m 0644 "$build_dir/libsegpool_capi.a" "$lib/libsegpool.a"
install -m 0644 "$here/include/segpool.h" "$dest$prefix/include/segpool.h"
# Libs.private: what `rustc --print native-static-libs` lists for the static library.
cat > "$lib/pkgconfig/segpool.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: segpool
Description: Off-heap, page-aligned segment pools under a memory budget (C ABI)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lsegpool
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
PC
echo "installed segpool $version into $dest$prefix (pkg-config: $lib/pkgconfig/segpool.pc)"
