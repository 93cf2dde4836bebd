//! The facematch driver: everything around the dataflow. Each module is one room
//! (ARCHITECTURE.md: Code map):
//!
//! - [`commands`]: the command line, one file per verb;
//! - [`store`]: Postgres — the schema, the history state machine, datasets, faces, runs;
//! - [`batch`]: one run from claim to write-back, the planner, the scheduler;
//! - [`runner`]: where the dataflow runs — inline, local processes, EMR — behind one trait;
//! - [`cluster`]: worker processes finding each other and running their share;
//! - `photos` (feature `photos`): photo builds and faces added from photos;
//! - [`output`]: tables, JSON, stats, progress;
//! - `web` (feature `web`): `facematch serve` — pages, the JSON API, crops, reports;
//! - [`bench`]: the kernel benchmark; [`signals`]: SIGTERM and SIGINT as flags.

#[cfg(target_os = "linux")]
pub mod alloc;
pub mod batch;
pub mod bench;
pub mod cluster;
pub mod commands;
pub mod output;
#[cfg(feature = "photos")]
pub mod photos;
pub mod runner;
pub mod signals;
pub mod store;
#[cfg(feature = "web")]
pub mod web;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Cargo runs a file of the top-level `tests/` folder only if driver/Cargo.toml declares it
    /// (it is outside the package): a file nobody registered would silently never run.
    #[test]
    fn every_test_file_is_registered() {
        let driver = Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest: toml::Table = std::fs::read_to_string(driver.join("Cargo.toml"))
            .expect("driver/Cargo.toml")
            .parse()
            .expect("driver/Cargo.toml is TOML");
        let registered: Vec<String> = manifest["test"]
            .as_array()
            .expect("[[test]] entries")
            .iter()
            .filter_map(|t| t.get("path")?.as_str().map(str::to_string))
            .collect();
        let mut missing = Vec::new();
        let mut found = 0;
        for entry in std::fs::read_dir(driver.join("../tests")).expect("the tests folder") {
            let name = entry.expect("a folder entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".rs") {
                found += 1;
                if !registered.contains(&format!("../tests/{name}")) {
                    missing.push(name.into_owned());
                }
            }
        }
        assert!(found >= 6, "only {found} test files found");
        assert!(
            missing.is_empty(),
            "tests/{} not registered: add a [[test]] entry for each to driver/Cargo.toml",
            missing.join(", tests/")
        );
    }

    /// Every `.rs` file under `dir`, with its code lines (comments dropped).
    fn code_of(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).expect("a source folder") {
                    stack.push(entry.expect("a folder entry").path());
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                let code = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .map(str::to_string)
                    .collect();
                files.push((path, code));
            }
        }
        files
    }

    /// The room a source file belongs to: its folder under src/, or its own name.
    fn room_of(src: &Path, file: &Path) -> String {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a path");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string()
    }

    /// The rooms of ARCHITECTURE.md import each other one way only, and only the rooms it allows.
    #[test]
    fn rooms_depend_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, code) in code_of(&src) {
            let room = room_of(&src, &file);
            if room == "lib" || room == "main" {
                continue;
            }
            for line in &code {
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name != room {
                        uses.entry(room.clone()).or_default().insert(name);
                    }
                }
            }
        }
        let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
            ("store", &[][..]),
            ("cluster", &[]),
            ("signals", &[]),
            ("bench", &[]),
            ("alloc", &[]),
            ("runner", &["cluster", "signals"]),
            ("batch", &["runner", "store", "signals"]),
            ("photos", &["runner", "store"]),
            ("output", &["batch", "photos", "store"]),
            (
                "web",
                &["batch", "runner", "photos", "store", "output", "signals"],
            ),
        ]);
        for (room, used) in &uses {
            if room == "commands" {
                continue; // the command line may call any room
            }
            let ok = allowed.get(room.as_str()).copied().unwrap_or_default();
            let extra: Vec<&String> = used.iter().filter(|u| !ok.contains(&u.as_str())).collect();
            assert!(
                extra.is_empty(),
                "{room} imports {extra:?}; ARCHITECTURE.md allows it only {ok:?}"
            );
        }
    }

    /// SQL is written in `store/` only, and the runner trait's module names no runner.
    #[test]
    fn sql_lives_in_the_store_and_the_runner_trait_names_no_runner() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for (file, code) in code_of(&src) {
            // lib.rs holds this test and its patterns.
            if matches!(room_of(&src, &file).as_str(), "store" | "lib") {
                continue;
            }
            for line in &code {
                for statement in [
                    "\"SELECT ",
                    "\"INSERT ",
                    "\"UPDATE ",
                    "\"DELETE ",
                    "\"COPY ",
                ] {
                    assert!(
                        !line.contains(statement),
                        "{}: SQL outside store/: {line}",
                        file.display()
                    );
                }
            }
        }
        let trait_module = std::fs::read_to_string(src.join("runner/mod.rs")).expect("runner");
        for line in trait_module
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
        {
            for runner in ["Emr", "Inline", "Processes"] {
                assert!(
                    !line.contains(runner),
                    "runner/mod.rs names a runner: {line}"
                );
            }
        }
    }
}
