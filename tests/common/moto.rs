//! `moto_server` 5.2.5 (ARCHITECTURE.md: Testing): the EMR API emulator, from the venv `make setup`
//! installs, started on a free port for one test and killed when it ends. No real EMR control
//! plane can exist on this machine; moto answers the API and keeps what was asked for.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto_server.
pub struct MotoServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Child,
}

impl MotoServer {
    /// Starts moto_server; panics (naming `make setup`) when the venv is missing.
    pub fn start() -> MotoServer {
        let bin = super::workspace().join(".local/venv-moto/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run `make setup` (it installs moto[server]==5.2.5 in a venv)",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// An aws-sdk-emr client for this server (explicit region and static credentials).
    pub fn emr(&self) -> aws_sdk_emr::Client {
        let config = aws_sdk_emr::Config::builder()
            .behavior_version(aws_sdk_emr::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_emr::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_emr::config::Credentials::new(
                "moto", "moto", None, None, "test",
            ))
            .build();
        aws_sdk_emr::Client::from_conf(config)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
