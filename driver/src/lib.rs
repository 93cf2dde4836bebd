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
//! - [`bench`]: the kernel benchmark; [`signals`]: SIGTERM and SIGINT as flags.

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

#[cfg(test)]
mod tests {
    /// Cargo runs a file of the top-level `tests/` folder only if driver/Cargo.toml declares it
    /// (it is outside the package): a file nobody registered would silently never run.
    #[test]
    fn every_test_file_is_registered() {
        let driver = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
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
}
