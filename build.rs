//! Link settings for the PAM module (the cdylib) only; the CLI and the tests
//! link as usual. Every host process (sshd, sudo, login) loads the module at
//! each `pam_start`, so it should be cheap to map and relocate
//! (bench/README.md says how that is measured):
//!
//! - `-z pack-relative-relocs`: relative relocations become compact DT_RELR
//!   bitmaps (glibc >= 2.36, Debian 12).
//! - No `libgcc_s.so.1`: std links the unwinder with `-lgcc_s`, so loading
//!   the module also loaded and relocated that library. We link GCC's static
//!   unwinder (`libgcc_eh.a`, what `-static-libgcc` uses) into the module
//!   instead. Panics still unwind (`panic = "unwind"`) and are caught at the
//!   FFI door inside the module; they never cross into the host.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    if let Some(dir) = shadow_libgcc_s() {
        // A plain `-L` to the compiler driver comes before its own library
        // directories, so `-lgcc_s` finds our linker script first.
        println!("cargo:rustc-cdylib-link-arg=-L{}", dir.display());
    }
}

/// Writes `libgcc_s.so` as a linker script that names the static unwinder,
/// if the C compiler has one; `None` keeps the usual shared libgcc_s.
fn shadow_libgcc_s() -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let found = String::from_utf8(out.stdout).ok()?;
    let found = Path::new(found.trim());
    if !out.status.success() || !found.is_absolute() || !found.is_file() {
        println!("cargo:warning=libgcc_eh.a not found: the module will need libgcc_s.so.1");
        return None;
    }
    let dir = PathBuf::from(std::env::var_os("OUT_DIR")?).join("unwind");
    std::fs::create_dir_all(&dir).ok()?;
    let script = format!("/* see build.rs */\nINPUT({})\n", found.display());
    std::fs::write(dir.join("libgcc_s.so"), script).ok()?;
    Some(dir)
}
