//! Hostfiles: the processes' addresses written by hand, instead of registering in the rendezvous.

use anyhow::{Context, Result, bail};

/// Reads a hostfile: one `host:port` per line in process order; blank lines and `#` comments are
/// skipped.
pub fn read_hostfile(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read hostfile {}", path.display()))?;
    let mut addresses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let valid = line
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            bail!(
                "hostfile {}:{}: expected host:port, got {line:?}",
                path.display(),
                n + 1
            );
        }
        addresses.push(line.to_string());
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfiles_list_addresses_in_order_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "# the cluster\nworker-a:2101\n\n10.0.0.7:2101  # b\n",
        )
        .unwrap();
        assert_eq!(
            read_hostfile(&path).unwrap(),
            ["worker-a:2101", "10.0.0.7:2101"]
        );
        std::fs::write(&path, "worker-a:2101\nworker-b\n").unwrap();
        let err = read_hostfile(&path).unwrap_err().to_string();
        assert!(err.contains("hosts:2") && err.contains("worker-b"), "{err}");
    }
}
