//! Links the module with `-z nodelete`: a card thread the module gave up on (another
//! program held the card too long) may still be waiting in pcsc-lite when the application
//! calls C_Finalize and unloads the library (p11-kit, NSS); the library must stay mapped
//! under it.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
