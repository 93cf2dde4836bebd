//! Which executable an EMR cluster runs, and whether it can start there. A stock EMR 7.x node
//! (Amazon Linux 2023) has the C library and little else, so the staged binary may link nothing
//! but libc, libm, libgcc_s and the loader: the portable worker binary of `make worker-binary`.
//! A binary that needs more is refused before anything is claimed or started, naming what it
//! needs. A build runs the face pipeline, which needs more than the C library: its nodes get the
//! worker bundle of `make worker-bundle` instead (ARCHITECTURE.md: The worker bundle), checked
//! here the same way from inside its archive.

use anyhow::{Context, Result, bail};
use object::read::elf::{ElfFile64, FileHeader};
use std::collections::BTreeSet;
use std::io::Read;
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

/// The folder a worker bundle unpacks to (what the bootstrap action links the command to).
pub const BUNDLE_DIR: &str = "facematch-bundle";

/// The file name ending of a worker bundle (what the bootstrap action unpacks).
pub const BUNDLE_SUFFIX: &str = ".tar.gz";

/// The models a bundle carries in `models/` (every detector and landmark setting).
pub const BUNDLED_MODELS: [&str; 4] = [
    "dlib_face_recognition_resnet_model_v1.dat",
    "mmod_human_face_detector.dat",
    "shape_predictor_5_face_landmarks.dat",
    "shape_predictor_68_face_landmarks.dat",
];

/// Checks that the archive at `path` is a worker bundle a stock EMR node can run: a `.tar.gz`
/// holding `facematch-bundle/facematch`, whose libraries and those of its `lib/` are the C
/// library's or in `lib/`, and dlib's models in `models/`.
pub fn check_bundle(path: &Path) -> Result<()> {
    let shown = path.display();
    if !path.to_string_lossy().ends_with(BUNDLE_SUFFIX) {
        bail!(
            "{shown} is not a worker bundle: `make worker-bundle` makes facematch-bundle-<profile>{BUNDLE_SUFFIX}"
        );
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut executables: Vec<(String, Vec<String>)> = Vec::new();
    let mut libraries = BTreeSet::new();
    let mut models = BTreeSet::new();
    let entries = archive
        .entries()
        .with_context(|| format!("{shown} is not a gzipped tar archive"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{shown} is not a readable tar.gz"))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(inside) = name.strip_prefix(&format!("{BUNDLE_DIR}/")) else {
            continue;
        };
        let inside = inside.to_string();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if let Some(model) = inside.strip_prefix("models/") {
            models.insert(model.to_string());
        } else if inside == "facematch" || inside.starts_with("lib/") {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("{shown}: cannot read {name}"))?;
            let needed = needed_libraries(&bytes).with_context(|| format!("{shown}: {name}"))?;
            if let Some(library) = inside.strip_prefix("lib/") {
                libraries.insert(library.to_string());
            }
            executables.push((inside, needed));
        }
    }
    if !executables.iter().any(|(name, _)| name == "facematch") {
        bail!("{shown} has no {BUNDLE_DIR}/facematch: not a worker bundle (`make worker-bundle`)");
    }
    for (name, needed) in &executables {
        let missing: Vec<&str> = needed
            .iter()
            .map(String::as_str)
            .filter(|lib| !C_LIBRARY.contains(lib) && !libraries.contains(*lib))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{shown}: {name} needs {}, which neither the bundle nor a stock EMR node has; \
                 make the bundle again with `make worker-bundle`",
                missing.join(", ")
            );
        }
    }
    let missing: Vec<&str> = BUNDLED_MODELS
        .into_iter()
        .filter(|model| !models.contains(*model))
        .collect();
    if !missing.is_empty() {
        bail!("{shown} lacks the models {}", missing.join(", "));
    }
    Ok(())
}

/// The worker bundle a build stages: `explicit` if given, else the one `make worker-bundle` (or
/// `make test`) left in `target/worker/`, of this executable's profile first; checked.
pub fn resolve_bundle(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        check_bundle(path)?;
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot find the facematch executable")?;
    let candidates: Vec<PathBuf> = siblings(&exe)
        .into_iter()
        .map(|portable| {
            let name = portable.file_name().unwrap_or_default().to_string_lossy();
            let profile = name.trim_start_matches("facematch-");
            portable.with_file_name(format!("facematch-bundle-{profile}{BUNDLE_SUFFIX}"))
        })
        .collect();
    match candidates.into_iter().find(|c| c.is_file()) {
        Some(path) => check_bundle(&path).map(|()| path),
        None => bail!(
            "a build on EMR runs the face pipeline, which a stock node lacks: make the worker \
             bundle with `make worker-bundle` (or pass --emr-bundle FILE{BUNDLE_SUFFIX})"
        ),
    }
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
