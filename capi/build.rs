//! Generates `include/segpool.h` with cbindgen: into `OUT_DIR` (what the tests compile against)
//! and into `capi/include/` (the committed copy C users read; a test checks it is up to date).

use std::env;
use std::fs;
use std::path::PathBuf;

/// The ABI version in the shared library's soname (`libsegpool.so.0`).
const ABI_VERSION: u32 = 0;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    // The shared library's soname: a program linked with `-lsegpool` records `libsegpool.so.0`
    // and runs with any build installed under that name (capi/install.sh installs
    // `libsegpool.so.<version>` and the links to it). The number changes only when a change of
    // the ABI would break programs already linked.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsegpool.so.{ABI_VERSION}");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("capi/cbindgen.toml is readable and valid");
    // `with_src` parses this crate's files only (no `cargo metadata`, no dependency sources).
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header from src/");

    let generated = out_dir.join("include/segpool.h");
    fs::create_dir_all(generated.parent().expect("has a parent")).expect("create OUT_DIR/include");
    bindings.write_to_file(&generated);

    // Rewrite the committed copy only when it differs, so its timestamp moves only on change.
    let text = fs::read(&generated).expect("the header was just written");
    let committed = crate_dir.join("include/segpool.h");
    if fs::read(&committed).ok().as_deref() != Some(&text[..]) {
        fs::create_dir_all(committed.parent().expect("has a parent")).expect("create capi/include");
        fs::write(&committed, &text).expect("write capi/include/segpool.h");
    }
}
