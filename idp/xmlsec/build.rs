//! Compiles the C shim (src/shim.c) against Debian's libxmlsec1 (OpenSSL back end) with the
//! flags its pkg-config file gives: the struct layouts the shim reads depend on them.

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    let probe = |metadata: bool| {
        pkg_config::Config::new()
            .atleast_version("1.2.30")
            .cargo_metadata(metadata)
            .probe("xmlsec1-openssl")
    };
    let lib = match probe(false) {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "libxmlsec1 (OpenSSL) not found: install Debian's libxmlsec1-dev \
                 (deploy/dev/packages.sh does): {e}"
            );
            std::process::exit(1);
        }
    };
    let mut cc = cc::Build::new();
    cc.file("src/shim.c").warnings(true).extra_warnings(true);
    for dir in &lib.include_paths {
        cc.include(dir);
    }
    for (name, value) in &lib.defines {
        cc.define(name, value.as_deref());
    }
    cc.compile("tessera_xmlsec_shim");
    // The libraries after the shim, which needs them.
    if let Err(e) = probe(true) {
        eprintln!("libxmlsec1: {e}");
        std::process::exit(1);
    }
}
