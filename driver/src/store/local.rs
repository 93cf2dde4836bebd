//! A throwaway local PostgreSQL 15 for the demo, tests and laptops: `initdb` + `postgres` in a
//! project folder, listening on 127.0.0.1 on a free (or chosen) port. As root it runs the server
//! through `runuser -u postgres --`, because postgres refuses to run as root.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Default folder of the local server (ignored by git).
pub const DEFAULT_DIR: &str = ".local/pg";
/// Database and role created in the local server.
pub const DB_NAME: &str = "facematch";

/// A local server's folder: `data/` (the cluster), `url` (its DATABASE_URL), `server.log`.
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    dir: PathBuf,
}

fn bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl LocalPostgres {
    /// The server living in `dir` (created on start).
    pub fn new(dir: impl Into<PathBuf>) -> LocalPostgres {
        let dir: PathBuf = dir.into();
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir)
        };
        LocalPostgres { dir }
    }

    /// The folder given by `FACEMATCH_PG_DIR`, or `.local/pg`.
    pub fn from_env() -> LocalPostgres {
        LocalPostgres::new(
            std::env::var("FACEMATCH_PG_DIR").unwrap_or_else(|_| DEFAULT_DIR.to_string()),
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn url_file(&self) -> PathBuf {
        self.dir.join("url")
    }

    /// The DATABASE_URL of this server, if it has been started once.
    pub fn url(&self) -> Option<String> {
        std::fs::read_to_string(self.url_file())
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn command(&self, program: &str) -> Command {
        let path = bin_dir().join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, mut command: Command, what: &str) -> Result<String> {
        let out = command
            .output()
            .with_context(|| format!("cannot run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.data().join("postmaster.pid").exists()
            && self
                .command("pg_ctl")
                .arg("status")
                .arg("-D")
                .arg(self.data())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
    }

    /// Starts the server (initialising it the first time) and returns its DATABASE_URL.
    /// `port`: 0 picks a free port (reused on later starts when still free).
    pub fn start(&self, port: u16) -> Result<String> {
        if self.is_running()
            && let Some(url) = self.url()
        {
            return Ok(url);
        }
        self.check_folder()?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        if is_root() {
            // The folder itself only (initdb then creates `data/` as postgres): never a
            // recursive chown of whatever the folder named holds.
            self.run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&self.dir);
                    c
                },
                "chown",
            )?;
        }
        if !self.data().join("PG_VERSION").exists() {
            let mut initdb = self.command("initdb");
            initdb.arg("-D").arg(self.data()).args([
                "-U",
                DB_NAME,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]);
            self.run(initdb, "initdb")?;
        }
        let port = if port != 0 {
            port
        } else {
            self.previous_port()
                .filter(|p| port_is_free(*p))
                .map_or_else(free_port, Ok)?
        };
        let admin = format!("postgres://{DB_NAME}@127.0.0.1:{port}/postgres");
        self.launch(port, &admin)?;
        crate::store::ensure_database(&admin, DB_NAME)?;
        let url = format!("postgres://{DB_NAME}@127.0.0.1:{port}/{DB_NAME}");
        std::fs::write(self.url_file(), format!("{url}\n"))?;
        Ok(url)
    }

    /// Starts `postgres` itself, not through `pg_ctl start`, which hands the folder names to a
    /// shell (a folder with a space, a quote or `$(…)` in its name would break or run); waits
    /// up to a minute for it to accept connections at `admin`.
    fn launch(&self, port: u16, admin: &str) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log_path = self.dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data())
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(&self.dir)
            .args(["-c", "max_connections=200"])
            .args(THROWAWAY_SETTINGS)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for the terminal's command does not reach it.
            .process_group(0);
        let mut child = postgres.spawn().context("cannot start postgres")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if crate::store::connect(admin).is_ok() {
                return Ok(());
            }
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(status) = child.try_wait()? {
                bail!(
                    "postgres exited ({status}) before accepting connections; see {}:\n{}",
                    log_path.display(),
                    tail(&log())
                );
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "postgres did not accept connections within 60 s; see {}:\n{}",
                    log_path.display(),
                    tail(&log())
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The folder must be new, empty, or a server this command made (it holds `data/`).
    fn check_folder(&self) -> Result<()> {
        let Ok(mut entries) = std::fs::read_dir(&self.dir) else {
            return Ok(()); // not there yet
        };
        if entries.next().is_some() && !self.data().exists() {
            bail!(
                "{} is not empty and holds no facematch database server: give `db start --dir` \
                 a new or empty folder",
                self.dir.display()
            );
        }
        Ok(())
    }

    fn previous_port(&self) -> Option<u16> {
        self.url()?
            .rsplit_once(':')?
            .1
            .split('/')
            .next()?
            .parse()
            .ok()
    }

    /// Stops the server if it runs.
    pub fn stop(&self) -> Result<()> {
        // A stale postmaster.pid (the machine rebooted, the session ended) means nothing to stop.
        if !self.is_running() {
            return Ok(());
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w"]);
        self.run(pg_ctl, "pg_ctl stop").map(|_| ())
    }

    /// The server's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Durability settings for a server whose data is disposable: a crash may lose it, and in exchange
/// bulk loads (a million `faces` rows) are not bound by fsync and checkpoint I/O.
const THROWAWAY_SETTINGS: [&str; 10] = [
    "-c",
    "fsync=off",
    "-c",
    "synchronous_commit=off",
    "-c",
    "full_page_writes=off",
    "-c",
    "max_wal_size=4GB",
    "-c",
    "shared_buffers=256MB",
];

/// The last lines of a server log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}
