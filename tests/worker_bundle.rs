//! The worker bundle (`make worker-bundle`; `make test` builds it in the dev profile): the binary
//! a build cluster runs must start where none of the face pipeline's libraries are. It is
//! unpacked, by that system's own tar, into a bare Debian root made by `debootstrap
//! --variant=minbase` (`make setup`, kept in `.local/debian-minbase`), which has no dlib,
//! OpenBLAS or libjpeg-turbo, and run there under chroot with nothing but `PATH` set (and
//! `/proc`, as on any host): it must
//! find its libraries and its models in itself and encode photos bit for bit as the normal build
//! does here. What it needs of glibc and libgcc_s is read from its files; and the check the EMR
//! runner makes before staging a bundle refuses one that lacks a library.

mod common;

use facematch_driver::runner::emr::binary::{C_LIBRARY, check_bundle};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare root `make setup` makes.
fn debian_root() -> PathBuf {
    let root = common::workspace().join(".local/debian-minbase");
    assert!(
        root.join("bin/sh").exists(),
        "{} is missing: `make setup` makes it (debootstrap --variant=minbase bookworm)",
        root.display()
    );
    root
}

/// `program args…` inside `root`, with an empty environment but `PATH` (and OpenBLAS's settings)
/// and `/proc` mounted (as on
/// any host: the loader finds `$ORIGIN` through `/proc/self/exe`), in mount and pid namespaces of
/// its own that end with it; as a user other than root, in a user namespace where it is root.
fn in_root(root: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("/usr/bin/unshare");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.arg("--map-root-user");
    }
    cmd.args(["--mount", "--pid", "--fork"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg("/usr/sbin/chroot");
    let out = cmd
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        // OpenBLAS picks its kernels by CPU unless told (this machine tells it, e.g.
        // OPENBLAS_CORETYPE): the two runs compared must use the same ones.
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("OPENBLAS_")))
        .output()
        .expect("unshare (util-linux) and chroot (coreutils)");
    assert!(
        out.status.success(),
        "in the Debian root, {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A folder inside the root, removed however the test ends.
struct Place(PathBuf);

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The encodings of `encode --json`, without the paths (which differ between the two runs).
fn faces_of(stdout: &[u8]) -> Vec<serde_json::Value> {
    let photos: Vec<serde_json::Value> = serde_json::from_slice(stdout).expect("encode --json");
    photos
        .into_iter()
        .map(|mut photo| {
            photo.as_object_mut().unwrap().remove("image");
            photo
        })
        .collect()
}

/// Every file under `dir` whose name starts with one of `prefixes`.
fn find(dir: &Path, prefixes: &[&str], found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find(&path, prefixes, found);
        } else if prefixes.iter().any(|p| name.starts_with(p)) {
            found.push(path);
        }
    }
}

#[test]
fn the_bundle_encodes_in_a_bare_debian_root_bit_for_bit_as_the_normal_build() {
    let root = debian_root();
    // The root has none of the face pipeline's libraries: the bundle must bring them.
    let mut present = Vec::new();
    for dir in ["usr/lib", "lib", "usr/local/lib"] {
        find(
            &root.join(dir),
            &[
                "libdlib",
                "libopenblas",
                "libturbojpeg",
                "libgfortran",
                "libblas",
                "liblapack",
            ],
            &mut present,
        );
    }
    assert!(present.is_empty(), "the bare root has {present:?}");

    let (archive, _) = common::worker_bundle();
    let name = format!("facematch-bundle-test-{}", std::process::id());
    let place = Place(root.join("opt").join(&name));
    std::fs::create_dir_all(&place.0).unwrap();
    std::fs::copy(&archive, place.0.join("bundle.tar.gz")).unwrap();
    let photos = [
        common::test_photos().join("obama.jpg"),
        common::test_photos().join("biden.jpg"),
        common::workspace().join(".local/photos/skimage/astronaut.png"),
    ];
    let inside = format!("/opt/{name}");
    let mut photo_args = Vec::new();
    for (i, photo) in photos.iter().enumerate() {
        let file = format!("photo-{i}.{}", photo.extension().unwrap().to_string_lossy());
        std::fs::copy(photo, place.0.join(&file)).unwrap();
        photo_args.push(format!("{inside}/{file}"));
    }
    // Unpacked as the bootstrap action does, by the system's own tar.
    in_root(
        &root,
        &[
            "tar",
            "-xzf",
            &format!("{inside}/bundle.tar.gz"),
            "-C",
            &inside,
        ],
    );
    let exe = format!("{inside}/facematch-bundle/facematch");

    // The loader there resolves every library into the bundle, but the C library's.
    let ldd = String::from_utf8(in_root(&root, &["ldd", &exe]).stdout).unwrap();
    let mut from_bundle = 0;
    for line in ldd.lines().filter(|l| l.contains("=>")) {
        let soname = line.split_whitespace().next().unwrap();
        if line.contains(&format!("{inside}/facematch-bundle/lib/")) {
            from_bundle += 1;
        } else {
            assert!(
                C_LIBRARY.contains(&soname),
                "{soname} is not the bundle's: {ldd}"
            );
        }
    }
    assert!(
        from_bundle >= 2,
        "OpenBLAS and libjpeg-turbo come from the bundle: {ldd}"
    );

    // No --models and no FACEMATCH_MODELS: the bundle's own models.
    let mut args = vec![exe.as_str(), "--json", "encode"];
    args.extend(photo_args.iter().map(String::as_str));
    let bundled = faces_of(&in_root(&root, &args).stdout);
    let normal = Command::new(env!("CARGO_BIN_EXE_facematch"))
        .args(["--json", "encode", "--models"])
        .arg(common::models_dir())
        .args(&photos)
        .output()
        .unwrap();
    assert!(
        normal.status.success(),
        "{}",
        String::from_utf8_lossy(&normal.stderr)
    );
    let normal = faces_of(&normal.stdout);
    let faces: usize = normal
        .iter()
        .map(|p| p["faces"].as_array().unwrap().len())
        .sum();
    assert!(faces >= 3, "every photo has a face: {normal:?}");
    // serde_json prints each float so that it reads back to the same bits.
    assert_eq!(
        bundled, normal,
        "the bundle's encodings differ from the normal build's"
    );
}

#[test]
fn nothing_in_the_bundle_needs_a_glibc_newer_than_2_34_or_the_shared_cxx_library() {
    let (_, dir) = common::worker_bundle();
    let mut files = vec![dir.join("facematch")];
    files.extend(
        std::fs::read_dir(dir.join("lib"))
            .unwrap()
            .flatten()
            .map(|e| e.path()),
    );
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        let symbols = common::objdump(&["-T"], file);
        if let Some((major, minor, line)) = common::glibc_versions(&symbols).into_iter().max() {
            assert!((major, minor) <= (2, 34), "{}: {line}", file.display());
        }
        assert!(
            !symbols.contains("GLIBCXX_"),
            "{} needs libstdc++.so",
            file.display()
        );
        for lib in common::needed_libraries(file) {
            assert!(
                C_LIBRARY.contains(&lib.as_str()) || dir.join("lib").join(&lib).is_file(),
                "{} needs {lib}, which is neither the C library nor in the bundle",
                file.display()
            );
        }
    }
}

#[test]
fn a_bundle_without_one_of_its_libraries_is_refused_naming_it() {
    let (archive, dir) = common::worker_bundle();
    check_bundle(&archive).expect("the bundle make test built is a good one");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("facematch-bundle-broken.tar.gz");
    let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir.parent().unwrap())
        .args([
            "--use-compress-program=gzip -1",
            &format!("--exclude={folder}/lib/libopenblas.so.0"),
            &format!("--exclude={folder}/models"),
            &format!("--transform=s,^{folder},facematch-bundle,"),
            "-cf",
        ])
        .arg(&bad)
        .arg(&folder)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let error = check_bundle(&bad).unwrap_err().to_string();
    assert!(error.contains("libopenblas.so.0"), "{error}");
    assert!(error.contains("make worker-bundle"), "{error}");
    let plain = check_bundle(env!("CARGO_BIN_EXE_facematch").as_ref()).unwrap_err();
    assert!(plain.to_string().contains("not a worker bundle"), "{plain}");
}
