//! Which executable an EMR cluster runs, and whether it can start there. A stock EMR 7.x node
//! (Amazon Linux 2023) has the C library and little else, so the staged binary may link nothing
//! but libc, libm, libgcc_s and the loader: the portable worker binary of `make worker-binary`.
//! A binary that needs more is refused before anything is claimed or started, naming what it
//! needs.

use anyhow::{Context, Result, bail};
use object::read::elf::{ElfFile64, FileHeader};
use std::path::{Path, PathBuf};

/// The libraries every glibc Linux has.
pub const C_LIBRARY: [&str; 4] = [
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
];

/// The shared libraries an x86-64 ELF executable needs (its `DT_NEEDED` entries).
pub fn needed_libraries(bytes: &[u8]) -> Result<Vec<String>> {
    let file =
        ElfFile64::<object::Endianness>::parse(bytes).context("not a 64-bit ELF executable")?;
    if file.elf_header().e_machine(file.endian()) != object::elf::EM_X86_64 {
        bail!("not built for x86-64");
    }
    let table = file
        .elf_section_table()
        .dynamic_table(file.endian(), file.data())
        .context("unreadable dynamic section")?;
    let mut needed = Vec::new();
    for entry in &table {
        if entry.tag == object::elf::DT_NEEDED {
            let name = table.string(entry).context("unreadable DT_NEEDED entry")?;
            needed.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(needed)
}

/// Checks that the binary at `path` would start on a stock EMR node.
pub fn check_portable(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let needed = needed_libraries(&bytes)
        .with_context(|| format!("{} cannot run on an EMR node", path.display()))?;
    let foreign: Vec<&String> = needed
        .iter()
        .filter(|lib| !C_LIBRARY.contains(&lib.as_str()))
        .collect();
    if !foreign.is_empty() {
        bail!(
            "{} needs {}, which a stock EMR node does not have: stage the portable worker \
             binary (`make worker-binary`, then --emr-binary target/worker/facematch-release)",
            path.display(),
            foreign
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The binary to stage: `explicit` if given (it must be portable); otherwise this executable if
/// it is portable, else the portable build `make worker-binary` (or `make test`) left beside it
/// in `target/worker/`, of this executable's profile first.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        check_portable(path)?;
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot find the facematch executable")?;
    let this = check_portable(&exe);
    if this.is_ok() {
        return Ok(exe);
    }
    for candidate in siblings(&exe) {
        if candidate.is_file() && check_portable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    this.map(|()| exe)
        .context("no portable worker binary to stage; build one with `make worker-binary`")
}

/// `target/worker/facematch-<profile>` for an executable in `target/<debug|release>/`.
fn siblings(exe: &Path) -> Vec<PathBuf> {
    let Some(profile_dir) = exe.parent() else {
        return Vec::new();
    };
    let Some(target) = profile_dir.parent() else {
        return Vec::new();
    };
    let mut profiles = ["release", "dev"];
    if profile_dir.file_name().is_some_and(|name| name == "debug") {
        profiles.reverse();
    }
    profiles
        .iter()
        .map(|profile| target.join(format!("worker/facematch-{profile}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_read_and_its_libraries_named() {
        let exe = std::env::current_exe().unwrap();
        let needed = needed_libraries(&std::fs::read(&exe).unwrap()).unwrap();
        assert!(needed.iter().any(|l| l == "libc.so.6"), "{needed:?}");
        assert!(needed_libraries(b"#!/bin/sh\necho hi\n").is_err());
    }

    /// With the face pipeline, this test binary links dlib: refused, naming it.
    #[cfg(feature = "photos")]
    #[test]
    fn a_binary_with_the_face_pipeline_is_refused_naming_its_libraries() {
        let exe = std::env::current_exe().unwrap();
        let err = check_portable(&exe).unwrap_err().to_string();
        assert!(err.contains("libdlib"), "{err}");
        assert!(err.contains("make worker-binary"), "{err}");
    }
}
