//! A node's identity in its certificate: subject CN `strand-node-<id>`, subject O the
//! cluster id (as `strand cert node` writes them).

use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject CN of a node certificate is this prefix and the node id in decimal.
pub const NODE_CN_PREFIX: &str = "strand-node-";

/// Who a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeIdentity {
    pub node_id: u32,
    pub cluster_id: String,
}

/// Why a certificate (already chained to the CA, or about to be) is not the node we want.
#[derive(Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the certificate cannot be parsed: {reason}")]
    Unparsable { reason: String },
    #[error("the certificate has no subject CN (expected strand-node-<id>)")]
    NoCommonName,
    #[error("the certificate's subject CN {cn:?} is not strand-node-<id>")]
    NotANode { cn: String },
    #[error("the certificate has no subject O (the cluster id)")]
    NoCluster,
    #[error("certificate is for cluster '{got}', this node is in '{expected}'")]
    WrongCluster { expected: String, got: String },
    #[error("certificate is for node {got}, expected node {expected}")]
    WrongNode { expected: u32, got: u32 },
}

/// Shown as its message: rustls puts a verifier's error into the handshake failure
/// with `{:?}`, and that text is what both ends log.
impl std::fmt::Debug for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The node id for `strand-node-<id>` (canonical decimal only, so one id has one name).
pub(crate) fn parse_node_cn(cn: &str) -> Option<u32> {
    let digits = cn.strip_prefix(NODE_CN_PREFIX)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn node_cn(node_id: u32) -> String {
    format!("{NODE_CN_PREFIX}{node_id}")
}

/// Reads the node identity from a DER certificate. Does not verify anything else: call
/// it on certificates whose chain was verified.
pub(crate) fn node_identity(der: &[u8]) -> Result<NodeIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable {
        reason: e.to_string(),
    })?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .ok_or(IdentityError::NoCommonName)?
        .as_str()
        .map_err(|e| IdentityError::Unparsable {
            reason: format!("subject CN: {e}"),
        })?;
    let node_id = parse_node_cn(cn).ok_or_else(|| IdentityError::NotANode { cn: cn.into() })?;
    let cluster_id = subject
        .iter_organization()
        .next()
        .ok_or(IdentityError::NoCluster)?
        .as_str()
        .map_err(|e| IdentityError::Unparsable {
            reason: format!("subject O: {e}"),
        })?;
    Ok(NodeIdentity {
        node_id,
        cluster_id: cluster_id.into(),
    })
}

/// Checks `der` is a certificate of node `node_id` (if given) in `cluster_id`.
pub(crate) fn check_identity(
    der: &[u8],
    cluster_id: &str,
    node_id: Option<u32>,
) -> Result<NodeIdentity, IdentityError> {
    let identity = node_identity(der)?;
    if identity.cluster_id != cluster_id {
        return Err(IdentityError::WrongCluster {
            expected: cluster_id.into(),
            got: identity.cluster_id,
        });
    }
    if let Some(expected) = node_id {
        if identity.node_id != expected {
            return Err(IdentityError::WrongNode {
                expected,
                got: identity.node_id,
            });
        }
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, org: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        if let Some(org) = org {
            dn.push(rcgen::DnType::OrganizationName, org);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    /// What the server checks after the handshake, on real certificates.
    #[test]
    fn identity_is_read_from_cn_and_o() {
        let good = cert("strand-node-7", Some("blue"));
        assert_eq!(
            check_identity(&good, "blue", None),
            Ok(NodeIdentity {
                node_id: 7,
                cluster_id: "blue".into()
            })
        );
        assert_eq!(
            check_identity(&good, "blue", Some(7)).map(|i| i.node_id),
            Ok(7)
        );
        assert_eq!(
            check_identity(&good, "blue", Some(8)),
            Err(IdentityError::WrongNode {
                expected: 8,
                got: 7
            })
        );
        let err = check_identity(&good, "green", None);
        assert_eq!(
            err,
            Err(IdentityError::WrongCluster {
                expected: "green".into(),
                got: "blue".into()
            })
        );
        assert_eq!(
            err.map(|_| ()).unwrap_err().to_string(),
            "certificate is for cluster 'blue', this node is in 'green'"
        );
        assert!(matches!(
            check_identity(&cert("admin", Some("blue")), "blue", None),
            Err(IdentityError::NotANode { .. })
        ));
        assert_eq!(
            check_identity(&cert("strand-node-1", None), "blue", None),
            Err(IdentityError::NoCluster)
        );
        assert!(matches!(
            check_identity(b"not a certificate", "blue", None),
            Err(IdentityError::Unparsable { .. })
        ));
    }

    #[test]
    fn node_cn_is_canonical() {
        assert_eq!(parse_node_cn("strand-node-0"), Some(0));
        assert_eq!(parse_node_cn("strand-node-42"), Some(42));
        assert_eq!(parse_node_cn(&node_cn(u32::MAX)), Some(u32::MAX));
        for bad in [
            "strand-node-",
            "strand-node-01",
            "strand-node-+1",
            "strand-node--1",
            "strand-node-1 ",
            "strand-node-4294967296",
            "node-1",
            "STRAND-NODE-1",
        ] {
            assert_eq!(parse_node_cn(bad), None, "{bad:?}");
        }
    }
}
