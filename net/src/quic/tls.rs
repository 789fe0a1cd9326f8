//! TLS for node-to-node QUIC: files, rustls configurations, and how a peer's identity
//! is verified.
//!
//! Both ends present the node certificate made by `strand cert node` and trust only
//! the cluster CA (`ca.pem`), with TLS 1.3 and no session resumption (every
//! connection verifies a full certificate chain).
//!
//! - **Server side** (connections peers open to us): client authentication is
//!   required, by rustls' `WebPkiClientVerifier` with the cluster CA as its only
//!   root. After the handshake the transport reads the peer's node id from its
//!   certificate's subject CN (`strand-node-<id>`) and checks its subject O is our
//!   cluster id; otherwise it closes the connection (application error
//!   [`super::close_code::REFUSED`]) and logs why. No stream of a connection is read
//!   before that check passes.
//! - **Client side** (our connections to peers): nodes are dialled by IP address,
//!   and a node certificate's SANs may not list the address a peer is reached at
//!   (NAT, a Kubernetes pod IP). So the server name we verify is the node identity,
//!   not the address: the client connects with server name `strand-node-<to>`, and
//!   [`PeerVerifier`] checks the chain to the CA (with the serverAuth usage, as
//!   WebPKI does) and that the certificate's CN is exactly that name and its O is our
//!   cluster id. SANs are not consulted. A server holding another node's (valid)
//!   certificate is therefore refused, as is any certificate from another CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::identity::{check_identity, node_cn, parse_node_cn};
use super::{QuicError, ALPN_PROTOCOL};

/// The CA certificate file in a node's TLS directory (a copy of the CA's `ca.pem`;
/// the CA key stays off the nodes).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The node certificate file, as written by `strand cert node`.
pub const NODE_CERT_FILE: &str = "node.pem";
/// The node private key file (PKCS#8 PEM), as written by `strand cert node`.
pub const NODE_KEY_FILE: &str = "node.key";

/// Where a node's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s), PEM: the only roots trusted.
    pub ca_cert: PathBuf,
    /// This node's certificate (and any intermediates after it), PEM.
    pub node_cert: PathBuf,
    /// This node's private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub node_key: PathBuf,
}

impl TlsFiles {
    /// `dir/ca.pem`, `dir/node.pem` and `dir/node.key`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        TlsFiles {
            ca_cert: dir.join(CA_CERT_FILE),
            node_cert: dir.join(NODE_CERT_FILE),
            node_key: dir.join(NODE_KEY_FILE),
        }
    }
}

/// The rustls halves of a node's TLS configuration.
pub(crate) struct TlsConfigs {
    pub server: rustls::ServerConfig,
    pub client: rustls::ClientConfig,
}

/// Loads the files and builds both configurations; checks that the node certificate
/// is for `node_id` in `cluster_id`, so a misplaced file fails at startup, not at the
/// first peer.
pub(crate) fn load(
    files: &TlsFiles,
    cluster_id: &str,
    node_id: u32,
) -> Result<TlsConfigs, QuicError> {
    let ca_certs = read_certs(&files.ca_cert, "CA certificate")?;
    let chain = read_certs(&files.node_cert, "node certificate")?;
    let key = read_key(&files.node_key)?;
    check_identity(&chain[0], cluster_id, Some(node_id)).map_err(|source| {
        QuicError::NodeCertificateMismatch {
            path: files.node_cert.clone(),
            source,
        }
    })?;

    let mut roots = RootCertStore::empty();
    for cert in ca_certs {
        roots.add(cert).map_err(|e| QuicError::TlsFileInvalid {
            what: "CA certificate",
            path: files.ca_cert.clone(),
            reason: e.to_string(),
        })?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_mismatch = |e: rustls::Error| QuicError::TlsFileInvalid {
        what: "node key",
        path: files.node_key.clone(),
        reason: format!("does not go with {}: {e}", files.node_cert.display()),
    };

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| QuicError::TlsConfig {
                reason: format!("client certificate verifier: {e}"),
            })?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(key_mismatch)?;
    server.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    // Resumption would skip the client certificate; every connection proves itself.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    server.max_early_data_size = 0;

    let verifier = PeerVerifier {
        roots,
        algorithms: provider.signature_verification_algorithms,
        cluster_id: cluster_id.into(),
    };
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(key_mismatch)?;
    client.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    client.enable_early_data = false;
    Ok(TlsConfigs { server, client })
}

/// The server name a client verifies when dialling node `node_id`.
pub(crate) fn server_name(node_id: u32) -> String {
    node_cn(node_id)
}

fn tls_config(e: rustls::Error) -> QuicError {
    QuicError::TlsConfig {
        reason: e.to_string(),
    }
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, QuicError> {
    std::fs::read(path).map_err(|source| QuicError::TlsFileRead {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, QuicError> {
    let pem = read_file(path, what)?;
    let invalid = |reason: String| QuicError::TlsFileInvalid {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, QuicError> {
    let pem = read_file(path, "node key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| QuicError::TlsFileInvalid {
        what: "node key",
        path: path.to_path_buf(),
        reason: format!("no usable PEM private key: {e}"),
    })
}

/// Verifies a peer's server certificate by node identity instead of by address (see
/// the module docs): chained to the cluster CA, CN equal to the server name we dialled
/// (`strand-node-<to>`), O equal to our cluster id.
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    cluster_id: String,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        // The transport only dials `strand-node-<id>` names; anything else is a bug.
        let expected = match server_name {
            ServerName::DnsName(name) => parse_node_cn(name.as_ref()),
            _ => None,
        };
        let Some(expected) = expected else {
            return Err(rustls::Error::General(format!(
                "server name {server_name:?} is not a node name"
            )));
        };
        check_identity(end_entity, &self.cluster_id, Some(expected)).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
