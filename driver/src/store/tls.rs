//! TLS to Postgres, as libpq does it: `sslmode` (`disable`, `prefer` — the default —, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or `system` for the machine's
//! store), from the URL or key=value string, else `PGSSLMODE` / `PGSSLROOTCERT`, through rustls.
//!
//! The postgres crate knows only disable, prefer and require, and does not check certificates
//! itself: [`split`] takes both settings off the connection string before it is parsed, and
//! [`connector`] builds the rustls configuration that checks what the mode asks. As in libpq,
//! `prefer` and `require` encrypt without checking the certificate — unless a root certificate
//! is given, which makes them check the chain as `verify-ca` does; `verify-full` also checks
//! that the certificate names the host connected to.

use anyhow::{Context, Result, bail};
use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq's default).
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS with a certificate signed by a trusted CA.
    VerifyCa,
    /// TLS with a certificate signed by a trusted CA and issued for the host.
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ),
        })
    }
}

/// What TLS a connection asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted CAs, or `system`.
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` off a connection string (a `postgres://` URL or libpq's
/// key=value form): the rest for the postgres crate's parser, and the TLS settings, which fall
/// back on `PGSSLMODE` and `PGSSLROOTCERT` like libpq's.
pub fn split(url: &str) -> Result<(String, TlsSettings)> {
    let (rest, mode, root_cert) =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            split_url(url)
        } else {
            split_key_values(url)?
        };
    let mode = match mode.or_else(|| std::env::var("PGSSLMODE").ok()) {
        Some(mode) => mode.parse()?,
        None => SslMode::Prefer,
    };
    let root_cert = root_cert.or_else(|| std::env::var("PGSSLROOTCERT").ok());
    Ok((rest, TlsSettings { mode, root_cert }))
}

/// `postgres://…?a=b&sslmode=…`: the query parameters are percent-encoded.
fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None, None);
    };
    let (mut mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "sslmode" => mode = Some(decoded()),
            "sslrootcert" => root_cert = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, mode, root_cert)
}

/// `host=… sslmode=… password='a b'`: values may be single-quoted, with `\'` and `\\` inside.
fn split_key_values(text: &str) -> Result<(String, Option<String>, Option<String>)> {
    let (mut mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for (key, value) in key_values(text)? {
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root_cert = Some(value),
            _ => kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
    }
    Ok((kept.join(" "), mode, root_cert))
}

/// The pairs of a key=value connection string.
pub(crate) fn key_values(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            bail!("not a Postgres connection string: `{key}` has no `=value`");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("not a Postgres connection string: unclosed quote after {key}="),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        pairs.push((key, value));
    }
}

/// The postgres crate's mode and the connector that checks what `settings` asks.
pub fn connector(settings: &TlsSettings) -> Result<(postgres::config::SslMode, MakeRustlsConnect)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // disable never looks at a certificate, so it needs none it could fail to read.
    let roots = match settings.mode {
        SslMode::Disable => None,
        _ => trusted_roots(settings)?,
    };
    let chain = match (settings.mode, roots) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => bail!(
            "sslmode={} needs the CA that signed the server's certificate: sslrootcert=FILE (a \
             PEM file, e.g. RDS's global-bundle.pem) or sslrootcert=system",
            if settings.mode == SslMode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            }
        ),
        (_, Some(roots)) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("sslrootcert")?,
        ),
        // disable never uses it; prefer and require without a root certificate only encrypt.
        (_, None) => None,
    };
    let verifier = Arc::new(LibpqVerifier {
        chain,
        check_name: settings.mode == SslMode::VerifyFull,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mode = match settings.mode {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    };
    Ok((mode, MakeRustlsConnect::new(config)))
}

/// The certificate error a failed connection carries, if the server's certificate was refused:
/// looked for along the chain of causes (rustls's error arrives wrapped in an `io::Error`).
pub fn refused_certificate(error: &(dyn std::error::Error + 'static)) -> Option<CertificateError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        let rustls_error = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error {
            return Some(problem.clone());
        }
        cause = error.source();
    }
    None
}

/// The CAs `sslrootcert` names — or, as libpq, `~/.postgresql/root.crt` when it exists.
fn trusted_roots(settings: &TlsSettings) -> Result<Option<RootCertStore>> {
    let path = match settings.root_cert.as_deref() {
        Some("system") => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                bail!("sslrootcert=system: this machine's certificate store has no CA");
            }
            return Ok(Some(roots));
        }
        Some(path) => PathBuf::from(path),
        None => match std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
            .filter(|p| p.is_file())
        {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("sslrootcert {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        bail!(
            "sslrootcert {}: no usable CA certificate in it ({unusable} unusable)",
            path.display()
        );
    }
    Ok(Some(roots))
}

/// What libpq checks of the server's certificate: nothing (`prefer` and `require` without a
/// root certificate: encrypted, the handshake's signatures still checked), the chain to a trusted
/// CA (`verify-ca`, or a root certificate given), or the chain and the host's name
/// (`verify-full`).
#[derive(Debug)]
struct LibpqVerifier {
    /// The trusted CAs' verifier, when the chain is checked.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the certificate must name the host.
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_off_urls_and_key_value_strings() {
        let (rest, tls) = split(
            "postgres://app@db:5432/facematch?application_name=fm&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20b.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://app@db:5432/facematch?application_name=fm");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert.as_deref(), Some("/tmp/ca b.pem"));
        let (rest, tls) = split(
            "host=db  user = app password='it\\'s' sslmode=verify-ca sslrootcert='/a b/ca.pem'",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert.as_deref(), Some("/a b/ca.pem"));
        assert!(rest.starts_with("host='db' user='app' password="), "{rest}");
        assert!(!rest.contains("ssl"), "{rest}");
        assert!(split("postgres://db/x?sslmode=verify-all").is_err());
        assert!(split("host=db sslmode").is_err());
        assert!(split("host='db").is_err());
    }
}
