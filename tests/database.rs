//! The database as an operator configures it.
//!
//! - TLS: a PostgreSQL of the test's own, started by `facematch db start` and restarted with
//!   `ssl = on` and a `pg_hba.conf` that admits only TLS connections, with a CA and a server
//!   certificate (for `localhost` and `127.0.0.1`) the test makes with `openssl`. Every `sslmode`
//!   is tried against it through the CLI, as a URL, a key=value string and `PGSSLMODE`.
//! - No silent DDL: on a database without the schema, or with an older or a newer one, no
//!   command but `db migrate` changes anything; reading commands work with a role that may only
//!   SELECT.

mod common;

use common::{TestDb, TestEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn facematch() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facematch"));
    cmd.env_remove("RUST_LOG")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGPASSWORD")
        .env_remove("DATABASE_URL");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (installed by make setup)");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A CA named `name` in `dir`: `<name>.pem` and `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A server certificate for localhost and 127.0.0.1 signed by CA `ca`: `server.pem`, `server.key`.
fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// A PostgreSQL that admits TLS connections only; stopped when dropped.
struct TlsServer {
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    address: String,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        // As root the server runs as `postgres`, which must reach its folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pg = dir.path().join("pg");
        let run = |args: &[&str]| {
            let out = facematch()
                .args(args)
                .arg("--dir")
                .arg(&pg)
                .output()
                .unwrap();
            assert!(out.status.success(), "facematch {args:?}: {}", text(&out));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let url = run(&["db", "start"]);
        run(&["db", "stop"]);
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        make_ca(&certs, "ca");
        make_ca(&certs, "other-ca");
        make_server_cert(&certs, "ca");
        let data = pg.join("data");
        for file in ["server.pem", "server.key"] {
            std::fs::copy(certs.join(file), data.join(file)).unwrap();
        }
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // The server runs as postgres and must read its key.
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("server.pem"))
                .arg(data.join("server.key"))
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {}", text(&out));
        }
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        assert_eq!(run(&["db", "start"]), url, "restarted on the same port");
        let address = url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_string();
        TlsServer { dir, address }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join("certs").join(name)
    }

    fn port(&self) -> &str {
        self.address.rsplit_once(':').unwrap().1
    }

    /// `facematch dataset list` against `url`, with HOME an empty folder (no
    /// ~/.postgresql/root.crt).
    fn list(&self, url: &str, env: &[(&str, &str)]) -> Output {
        facematch()
            .args(["dataset", "list"])
            .env("DATABASE_URL", url)
            .env("HOME", self.dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = facematch()
            .args(["db", "stop", "--dir"])
            .arg(self.dir.path().join("pg"))
            .output();
    }
}

#[test]
fn every_sslmode_is_honoured_and_a_wrong_certificate_is_named() {
    let server = TlsServer::start();
    let base = format!("postgres://facematch@{}/facematch", server.address);
    let ca = server.cert("ca.pem").display().to_string();
    let other = server.cert("other-ca.pem").display().to_string();
    let connects = |url: &str, env: &[(&str, &str)], what: &str| {
        let out = server.list(url, env);
        assert!(out.status.success(), "{what}: {}", text(&out));
    };
    let refused = |url: &str, env: &[(&str, &str)], what: &str, says: &str| {
        let out = server.list(url, env);
        let said = text(&out);
        assert!(!out.status.success(), "{what} must not connect");
        assert!(said.contains(says), "{what}: {said}");
        said
    };

    // Without TLS the server lets nobody in.
    refused(
        &format!("{base}?sslmode=disable"),
        &[],
        "sslmode=disable",
        "no encryption",
    );
    // prefer (the default) and require encrypt without checking the certificate.
    connects(&base, &[], "the default, prefer");
    connects(&format!("{base}?sslmode=require"), &[], "sslmode=require");
    // verify-full with the CA that signed the certificate, by address and by name.
    connects(
        &format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        &[],
        "verify-full, right CA",
    );
    connects(
        &format!(
            "postgresql://facematch@localhost:{}/facematch?sslmode=verify-full&sslrootcert={ca}",
            server.port()
        ),
        &[],
        "verify-full by host name",
    );
    // The same settings from libpq's environment variables, and in key=value form.
    connects(
        &base,
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
        "PGSSLMODE",
    );
    let key_values = |mode: &str, host: &str, root: &str| {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=facematch dbname=facematch \
             sslmode={mode} sslrootcert='{root}'",
            server.port()
        )
    };
    connects(
        &key_values("verify-full", "localhost", &ca),
        &[],
        "key=value",
    );
    // Another CA: refused, and said so.
    let said = refused(
        &format!("{base}?sslmode=verify-full&sslrootcert={other}"),
        &[],
        "verify-full, wrong CA",
        "not signed by a CA in sslrootcert=",
    );
    assert!(said.contains(&other), "{said}");
    refused(
        &format!("{base}?sslmode=verify-ca&sslrootcert={other}"),
        &[],
        "verify-ca, wrong CA",
        "not signed by a CA",
    );
    // A root certificate makes require check the chain, as libpq.
    refused(
        &format!("{base}?sslmode=require&sslrootcert={other}"),
        &[],
        "require with a root certificate",
        "not signed by a CA",
    );
    // A name the certificate does not list: verify-full refuses, verify-ca does not check it.
    refused(
        &key_values("verify-full", "db.example.internal", &ca),
        &[],
        "verify-full, wrong name",
        "not issued for the host",
    );
    connects(
        &key_values("verify-ca", "db.example.internal", &ca),
        &[],
        "verify-ca, wrong name",
    );
    // Verifying without a CA to verify against is a mistake to name, not a silent downgrade.
    refused(
        &format!("{base}?sslmode=verify-full"),
        &[],
        "verify-full without sslrootcert",
        "needs the CA that signed the server's certificate",
    );
    refused(
        &format!("{base}?sslmode=verify-everything"),
        &[],
        "an unknown sslmode",
        "is not one of disable, prefer, require, verify-ca, verify-full",
    );
}

#[test]
fn a_password_is_never_printed() {
    // Nothing listens on port 1: every syntax fails to connect, and says where without the
    // password.
    let secret = "hunter2-s3cr@t";
    for url in [
        format!("postgres://facematch:{secret}@127.0.0.1:1/facematch"),
        format!("postgres://facematch@127.0.0.1:1/facematch?password={secret}"),
        format!("host=127.0.0.1 port=1 user=facematch password='{secret}' dbname=facematch"),
    ] {
        let out = facematch()
            .args(["dataset", "list"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        let said = text(&out);
        assert!(!out.status.success());
        assert!(said.contains("cannot connect to Postgres at"), "{said}");
        assert!(said.contains("***"), "{said}");
        assert!(!said.contains(secret), "{url} printed: {said}");
    }
}

#[test]
fn only_db_migrate_changes_the_schema() {
    // A database without the schema: every command stops, and creates nothing.
    let fresh = TestDb::create();
    for args in [
        &["show", "1"][..],
        &["dataset", "list"],
        &["submit", "--face", "1"],
        &["run"],
    ] {
        let out = facematch()
            .args(args)
            .env("DATABASE_URL", &fresh.url)
            .output()
            .unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            said.contains("no facematch schema yet") && said.contains("run `facematch db migrate`"),
            "{args:?}: {said}"
        );
    }
    assert_eq!(fresh.snapshot(), vec!["tables: []".to_string()], "no DDL");

    let env = TestEnv::new();
    env.ok(&[
        "dataset",
        "synth",
        "--name",
        "tiny",
        "--identities",
        "20",
        "--per-identity",
        "3",
        "--dim",
        "8",
        "--seed",
        "3",
    ]);
    let id = env.ok(&["submit", "--face", "1"]).trim().to_string();
    let known = env.ok(&["db", "migrate"]);
    let version: u32 = known
        .trim()
        .strip_prefix("schema at V")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{known}"));
    assert!(known.contains("(0 migration(s) applied now)"), "{known}");

    // An older schema (the last migration not applied yet): every command stops and says how
    // to move on; nothing changes.
    let mut client = env.db.client();
    let last: (String, String, String) = {
        let row = client
            .query_one(
                "SELECT name, applied_on, checksum FROM refinery_schema_history WHERE version = $1",
                &[&(version as i32)],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    client
        .execute(
            "DELETE FROM refinery_schema_history WHERE version = $1",
            &[&(version as i32)],
        )
        .unwrap();
    let before = env.db.snapshot();
    let older = format!(
        "schema is at V{}, this facematch needs V{version}: run `facematch db migrate`",
        version - 1
    );
    for args in [
        &["show", id.as_str()][..],
        &["submit", "--face", "2"],
        &["run"],
    ] {
        let out = env.run(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(&older), "{args:?}: {}", text(&out));
    }
    assert_eq!(
        env.db.snapshot(),
        before,
        "an older schema: nothing changed"
    );
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES ($1, $2, $3, $4)",
            &[&(version as i32), &last.0, &last.1, &last.2],
        )
        .unwrap();

    // A newer schema than this facematch knows: reading works, writing is refused.
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES ($1, 'from_the_future', '2027-01-01T00:00:00Z', '0')",
            &[&(version as i32 + 1)],
        )
        .unwrap();
    let before = env.db.snapshot();
    assert!(env.ok(&["show", &id]).contains("PENDING"));
    env.ok(&["dataset", "list"]);
    let newer = format!(
        "schema is at V{}, newer than this facematch knows (V{version}): it refuses to write",
        version + 1
    );
    for args in [&["submit", "--face", "2"][..], &["run"]] {
        let out = env.run(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(&newer), "{args:?}: {}", text(&out));
    }
    assert_eq!(env.db.snapshot(), before, "a newer schema: nothing written");
    client
        .execute(
            "DELETE FROM refinery_schema_history WHERE version = $1",
            &[&(version as i32 + 1)],
        )
        .unwrap();

    // Reading commands need nothing but SELECT.
    let reader = format!("fm_reader_{}", std::process::id());
    client
        .batch_execute(&format!(
            "CREATE ROLE {reader} LOGIN;
             GRANT USAGE ON SCHEMA public TO {reader};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader};"
        ))
        .unwrap();
    let (base, database) = env.db.url.rsplit_once('/').unwrap();
    let scheme_end = base.find("://").unwrap() + 3;
    let at = base.rfind('@').map_or(scheme_end, |at| at + 1);
    let reader_url = format!("{}{reader}@{}/{database}", &base[..scheme_end], &base[at..]);
    let as_reader = |args: &[&str]| {
        env.command(args)
            .env("DATABASE_URL", &reader_url)
            .output()
            .unwrap()
    };
    for args in [
        &["show", id.as_str()][..],
        &["dataset", "list"],
        &["dataset", "show", "tiny"],
    ] {
        let out = as_reader(args);
        assert!(
            out.status.success(),
            "{args:?} as a SELECT-only role: {}",
            text(&out)
        );
    }
    let out = as_reader(&["submit", "--face", "2"]);
    assert!(!out.status.success(), "a SELECT-only role cannot submit");
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    client
        .batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {reader};
             REVOKE USAGE ON SCHEMA public FROM {reader};
             DROP ROLE {reader};"
        ))
        .unwrap();
}

#[test]
fn db_start_takes_any_folder_name_and_touches_nothing_it_does_not_own() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Spaces, a quote and a command substitution: one folder name, never shell syntax.
    let odd = dir.path().join("a b'c $(touch pwned)");
    let out = facematch()
        .args(["db", "start", "--dir"])
        .arg(&odd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let listed = facematch()
        .args(["dataset", "list"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    let stopped = facematch()
        .args(["db", "stop", "--dir"])
        .arg(&odd)
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(!dir.path().join("pwned").exists() && !Path::new("pwned").exists());

    // A folder holding something else is not taken over (as root it would have been chowned).
    let other = dir.path().join("photos");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("holiday.jpg"), b"not a database").unwrap();
    let out = facematch()
        .args(["db", "start", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not empty and holds no facematch database server"),
        "{}",
        text(&out)
    );
    let owner = std::fs::metadata(other.join("holiday.jpg")).unwrap();
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    assert_eq!(owner.uid(), unsafe { libc::geteuid() }, "left as it was");
    assert_eq!(
        std::fs::read(other.join("holiday.jpg")).unwrap(),
        b"not a database"
    );
}
