//! Generates the C header from the crate's `extern "C"` items with cbindgen (version macros
//! from Cargo.toml), and a pkg-config file beside the built library.

use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("out dir"));
    let version = std::env::var("CARGO_PKG_VERSION").expect("version");
    let part = |name: &str| std::env::var(name).expect("version part");
    let macros = format!(
        "#define UF_VERSION_MAJOR {}\n#define UF_VERSION_MINOR {}\n#define UF_VERSION_PATCH {}\n#define UF_VERSION_STRING \"{version}\"",
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
    );
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .with_after_include(macros)
        .generate()
        .expect("generate the C header")
        .write_to_file(out_dir.join("uniface.h"));
    // target/<profile>/uniface.pc: OUT_DIR is target/<profile>/build/<pkg>-<hash>/out
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        write_pkg_config(profile_dir, &crate_dir, &version);
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
}

fn write_pkg_config(lib_dir: &Path, crate_dir: &Path, version: &str) {
    let pc = format!(
        "libdir={}\nincludedir={}\n\nName: uniface\nDescription: UniFace face biometrics (C API)\nVersion: {version}\nLibs: -L${{libdir}} -luniface\nLibs.private: -lm -ldl -lpthread -lstdc++\nCflags: -I${{includedir}}\n",
        lib_dir.display(),
        crate_dir.join("include").display(),
    );
    // best effort: a read-only target directory only loses the .pc file
    let _ = std::fs::write(lib_dir.join("uniface.pc"), pc);
}
