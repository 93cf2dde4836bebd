//! Rebuild when a migration is added: refinery embeds the folder at compile time.
//!
//! With the `bundle` feature (`make worker-bundle`; ARCHITECTURE.md: The worker bundle), dlib and
//! the C++ library are linked from their static archives. Debian's `libstdc++.so.6` needs glibc
//! 2.36 (`arc4random`), newer than an EMR 7.x node's 2.34, and `libdlib.so` needs that
//! `libstdc++.so.6`; linked statically, only the parts of libstdc++ dlib uses come along, and the
//! libraries left shared (OpenBLAS, libjpeg-turbo, libpng) need no glibc newer than 2.34, so the
//! bundle can carry them beside the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=CXX");
    if std::env::var_os("CARGO_FEATURE_BUNDLE").is_some()
        && let Err(message) = link_face_libraries_statically()
    {
        panic!("the bundle feature cannot link dlib statically: {message}");
    }
}

/// Puts a folder holding only `libdlib.a` and `libstdc++.a` first on the library search path,
/// so the `-ldlib` and `-lstdc++` that dlib-face-recognition and the `cc` crate ask for resolve
/// to the archives; then names, after everything, the shared libraries the archives need (the
/// shared `libdlib.so` used to bring them as its own dependencies).
fn link_face_libraries_statically() -> Result<(), String> {
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let dir = out.join("static-face-libraries");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dlib = library_dir("dlib-1")?.join("libdlib.a");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let stdcxx = PathBuf::from(command_output(&cxx, &["-print-file-name=libstdc++.a"])?);
    for archive in [&dlib, &stdcxx] {
        if !archive.is_file() {
            return Err(format!(
                "{} is missing (libdlib-dev and g++ provide the static archives)",
                archive.display()
            ));
        }
        let name = archive.file_name().ok_or("archive without a name")?;
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(archive, &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    for lib in ["openblas", "lapack", "png16", "jpeg", "z", "pthread"] {
        println!("cargo:rustc-link-arg=-l{lib}");
    }
    Ok(())
}

/// The folder pkg-config names for `package`'s libraries.
fn library_dir(package: &str) -> Result<PathBuf, String> {
    let dir = command_output("pkg-config", &["--variable=libdir", package])?;
    let dir = Path::new(&dir);
    if dir.as_os_str().is_empty() {
        return Err(format!("pkg-config knows no {package}"));
    }
    Ok(dir.to_path_buf())
}

fn command_output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
