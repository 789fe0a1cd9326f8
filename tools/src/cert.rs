//! `strand cert ...`: offline commands that make the cluster CA and node certificates
//! (no broker needed).
//!
//! Nodes replicate over QUIC with TLS, and a node without a certificate signed by the
//! cluster CA cannot join. `strand cert ca` makes that CA (`ca.pem` + `ca.key`);
//! `strand cert node` signs a node's certificate with it (`node.pem` + `node.key`), with
//! the node id in the subject CN (`strand-node-N`), the cluster id in O (copied from the
//! CA), and the DNS/IP subject alternative names given.
//!
//! Keys are ECDSA P-256 (PKCS#8 PEM), written with mode 0600. Existing files are never
//! overwritten without `--force`; every output path is checked before anything is written.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The CA certificate file in a CA directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA private key file in a CA directory.
pub const CA_KEY: &str = "ca.key";
/// The node certificate file in a node directory.
pub const NODE_CERT: &str = "node.pem";
/// The node private key file in a node directory.
pub const NODE_KEY: &str = "node.key";
/// Matches strand-node's default `cluster_id`.
pub const CLUSTER_ID_DEFAULT: &str = "strand-dev";
/// Certificates are valid from this long before they are made, to tolerate clock skew.
const BACKDATE: Duration = Duration::hours(1);

/// `strand cert ...`: make the cluster CA and node certificates (no broker needed).
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a cluster CA: writes DIR/ca.pem (certificate) and DIR/ca.key (key, mode 0600).
    /// Keep ca.key off the nodes; it signs new node certificates.
    Ca(CaArgs),
    /// Make a node certificate signed by the cluster CA: writes DIR/node.pem and
    /// DIR/node.key (mode 0600).
    Node(NodeArgs),
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Directory to write ca.pem and ca.key into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The cluster id, written into the subject O of the CA and of every node certificate.
    #[arg(long, value_name = "ID", default_value = CLUSTER_ID_DEFAULT)]
    pub cluster_id: String,
    /// Days the CA certificate is valid for.
    #[arg(long, value_name = "N", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Overwrite ca.pem / ca.key if they exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The CA directory (holding ca.pem and ca.key, as written by `strand cert ca`).
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The node id (strand-node's node_id); the subject CN is `strand-node-N`.
    #[arg(long, value_name = "N")]
    pub node_id: u32,
    /// A DNS name the node is reached by (subject alternative name); repeatable.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// An IP address the node is reached by (subject alternative name); repeatable.
    /// Nodes reached as e.g. 127.0.0.1 need this.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
    /// Directory to write node.pem and node.key into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Days the node certificate is valid for.
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Overwrite node.pem / node.key if they exist.
    #[arg(long)]
    pub force: bool,
}

/// Runs `strand cert ...` and returns what to print.
pub fn command(cmd: &CertCommand) -> Result<String> {
    match cmd {
        CertCommand::Ca(args) => {
            let (cert, key) = make_ca(&args.out, &args.cluster_id, args.days, args.force)?;
            Ok(format!(
                "wrote {} and {} (cluster CA for {:?}, valid {} days)\n",
                cert.display(),
                key.display(),
                args.cluster_id,
                args.days
            ))
        }
        CertCommand::Node(args) => {
            let (cert, key) = make_node(args)?;
            Ok(format!(
                "wrote {} and {} (strand-node-{}, valid {} days)\n",
                cert.display(),
                key.display(),
                args.node_id,
                args.days
            ))
        }
    }
}

/// Writes a self-signed cluster CA into `out`; returns the certificate and key paths.
pub fn make_ca(out: &Path, cluster_id: &str, days: u32, force: bool) -> Result<(PathBuf, PathBuf)> {
    if cluster_id.is_empty() {
        bail!("--cluster-id must not be empty");
    }
    let (cert_path, key_path) = (out.join(CA_CERT), out.join(CA_KEY));
    check_writable(&[&cert_path, &key_path], force)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("strand cluster CA ({cluster_id})"),
    );
    dn.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, days);

    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    create_dir(out)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, force)?;
    Ok((cert_path, key_path))
}

/// Writes a node certificate signed by the CA in `args.ca` into `args.out`; returns the
/// certificate and key paths.
pub fn make_node(args: &NodeArgs) -> Result<(PathBuf, PathBuf)> {
    if args.hosts.is_empty() && args.ips.is_empty() {
        bail!("give at least one --host NAME or --ip ADDR (the names other nodes dial)");
    }
    let (cert_path, key_path) = (args.out.join(NODE_CERT), args.out.join(NODE_KEY));
    check_writable(&[&cert_path, &key_path], args.force)?;

    let (ca_cert_path, ca_key_path) = (args.ca.join(CA_CERT), args.ca.join(CA_KEY));
    let ca_pem = fs::read_to_string(&ca_cert_path).with_context(|| {
        format!(
            "reading the CA certificate {} (--ca)",
            ca_cert_path.display()
        )
    })?;
    let ca_key_pem = fs::read_to_string(&ca_key_path)
        .with_context(|| format!("reading the CA key {} (--ca)", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("{} is not a PEM private key", ca_key_path.display()))?;
    let cluster_id = check_ca(&ca_pem, &ca_cert_path, &ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{} is not a usable CA certificate", ca_cert_path.display()))?;

    let mut sans = Vec::new();
    for host in &args.hosts {
        let name = host
            .clone()
            .try_into()
            .with_context(|| format!("--host {host:?} is not a valid DNS name"))?;
        sans.push(SanType::DnsName(name));
    }
    sans.extend(args.ips.iter().map(|ip| SanType::IpAddress(*ip)));

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("strand-node-{}", args.node_id));
    dn.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Nodes both accept and dial replication connections: one certificate for both ends.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, args.days);

    let key = KeyPair::generate().context("generating the node key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the node certificate")?;
    create_dir(&args.out)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, args.force)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, args.force)?;
    Ok((cert_path, key_path))
}

/// Checks that `ca_pem` is a CA certificate whose public key is `ca_key`'s; returns its O
/// (the cluster id).
fn check_ca(ca_pem: &str, path: &Path, ca_key: &KeyPair) -> Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate: {e}", path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{} is not an X.509 certificate: {e}", path.display()))?;
    if !cert.is_ca() {
        bail!("{} is not a CA certificate", path.display());
    }
    if cert.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        bail!(
            "the CA key does not match the CA certificate {} (--ca)",
            path.display()
        );
    }
    let org = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .with_context(|| format!("{} has no subject O (cluster id)", path.display()))?;
    Ok(org.to_string())
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
}

/// Fails naming the first of `paths` that exists, unless `force`.
fn check_writable(paths: &[&Path], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for path in paths {
        if fs::symlink_metadata(path).is_ok() {
            bail!(
                "{} already exists; not overwriting it (pass --force to replace it)",
                path.display()
            );
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("creating the directory {} (--out)", dir.display()))
}

/// Writes `bytes` to a new file with `mode`. With `force` an existing file is replaced
/// (removed first, so the new file gets `mode` and never a looser old one).
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<()> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            if path.exists() {
                format!(
                    "{} already exists (pass --force to replace it)",
                    path.display()
                )
            } else {
                format!("creating {}", path.display())
            }
        })?;
    // The umask may have narrowed `mode`; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::Pem;

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("strand-cert-")
            .tempdir()
            .expect("tempdir")
    }

    fn node_args(ca: &Path, out: &Path) -> NodeArgs {
        NodeArgs {
            ca: ca.to_path_buf(),
            node_id: 7,
            hosts: vec!["node7.strand.internal".into(), "localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            out: out.to_path_buf(),
            days: 30,
            force: false,
        }
    }

    fn read_pem(path: &Path) -> Pem {
        let bytes = fs::read(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).unwrap();
        pem
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn node_cert_is_signed_by_the_ca_with_the_names_and_validity_asked_for() {
        let dir = tempdir();
        let (ca_dir, node_dir) = (dir.path().join("ca"), dir.path().join("n7"));
        make_ca(&ca_dir, "prod-eu", 100, false).unwrap();
        let (cert_path, key_path) = make_node(&node_args(&ca_dir, &node_dir)).unwrap();
        assert_eq!(cert_path, node_dir.join("node.pem"));
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        assert!(fs::read_to_string(&key_path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));

        let ca_pem = read_pem(&ca_dir.join("ca.pem"));
        let ca = ca_pem.parse_x509().unwrap();
        let node_pem = read_pem(&cert_path);
        let node = node_pem.parse_x509().unwrap();

        // Independent check of the signature (x509-parser's verify, on ring).
        node.verify_signature(Some(ca.public_key()))
            .expect("node cert signed by the CA");
        ca.verify_signature(None).expect("CA self-signed");
        assert!(ca.is_ca());
        assert!(!node.is_ca());
        assert_eq!(node.issuer(), ca.subject());

        let cn: Vec<_> = node
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["strand-node-7"]);
        let org: Vec<_> = node
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(org, ["prod-eu"]);

        let san = node
            .subject_alternative_name()
            .unwrap()
            .expect("SAN extension");
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, ["node7.strand.internal", "localhost"]);
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(ips, [vec![127, 0, 0, 1], v6.to_vec()]);

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let validity = node.validity();
        assert!(validity.is_valid());
        let not_after = validity.not_after.timestamp();
        let days30 = 30 * 86_400;
        assert!(
            (not_after - now - days30).abs() < 120,
            "not_after {not_after}, now {now}"
        );
        assert!(validity.not_before.timestamp() <= now);
        let ca_after = ca.validity().not_after.timestamp();
        assert!((ca_after - now - 100 * 86_400).abs() < 120);
    }

    #[test]
    fn a_cert_from_another_ca_fails_verification() {
        let dir = tempdir();
        let (ca_a, ca_b) = (dir.path().join("a"), dir.path().join("b"));
        make_ca(&ca_a, "c", 10, false).unwrap();
        make_ca(&ca_b, "c", 10, false).unwrap();
        let (cert_path, _) = make_node(&node_args(&ca_b, &dir.path().join("n"))).unwrap();
        let ca_pem = read_pem(&ca_a.join("ca.pem"));
        let ca = ca_pem.parse_x509().unwrap();
        let node_pem = read_pem(&cert_path);
        let node = node_pem.parse_x509().unwrap();
        assert!(node.verify_signature(Some(ca.public_key())).is_err());
    }

    #[test]
    fn existing_files_are_not_overwritten_without_force() {
        let dir = tempdir();
        let ca_dir = dir.path().join("ca");
        make_ca(&ca_dir, "c", 10, false).unwrap();
        let before = fs::read(ca_dir.join("ca.pem")).unwrap();
        let err = make_ca(&ca_dir, "c", 10, false).unwrap_err().to_string();
        assert!(err.contains("ca.pem") && err.contains("--force"), "{err}");
        assert_eq!(fs::read(ca_dir.join("ca.pem")).unwrap(), before);

        let node_dir = dir.path().join("n");
        let args = node_args(&ca_dir, &node_dir);
        make_node(&args).unwrap();
        let before = fs::read(node_dir.join("node.key")).unwrap();
        let err = make_node(&args).unwrap_err().to_string();
        assert!(err.contains("node.pem") && err.contains("--force"), "{err}");
        assert_eq!(fs::read(node_dir.join("node.key")).unwrap(), before);

        // An existing key alone also blocks (checked before anything is written).
        fs::remove_file(node_dir.join("node.pem")).unwrap();
        let err = make_node(&args).unwrap_err().to_string();
        assert!(err.contains("node.key"), "{err}");
        assert!(!node_dir.join("node.pem").exists());

        // --force replaces both, and the key keeps mode 0600 even if it was loosened.
        fs::set_permissions(node_dir.join("node.key"), fs::Permissions::from_mode(0o644)).unwrap();
        make_node(&NodeArgs {
            force: true,
            ..args
        })
        .unwrap();
        assert_ne!(fs::read(node_dir.join("node.key")).unwrap(), before);
        assert_eq!(mode(&node_dir.join("node.key")), 0o600);
        make_ca(&ca_dir, "c", 10, true).unwrap();
    }

    #[test]
    fn clear_errors_for_a_missing_or_mismatched_ca() {
        let dir = tempdir();
        let missing = dir.path().join("nope");
        let err = format!(
            "{:#}",
            make_node(&node_args(&missing, &dir.path().join("n"))).unwrap_err()
        );
        assert!(err.contains("nope/ca.pem") && err.contains("--ca"), "{err}");

        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        make_ca(&a, "c", 10, false).unwrap();
        make_ca(&b, "c", 10, false).unwrap();
        fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
        let err = format!(
            "{:#}",
            make_node(&node_args(&a, &dir.path().join("n"))).unwrap_err()
        );
        assert!(err.contains("does not match"), "{err}");

        let mut args = node_args(&b, &dir.path().join("n"));
        args.hosts.clear();
        args.ips.clear();
        assert!(make_node(&args).unwrap_err().to_string().contains("--host"));
    }

    #[test]
    fn the_command_line_parses_and_runs_offline() {
        let dir = tempdir();
        let ca = dir.path().join("ca");
        let node = dir.path().join("n1");
        let cli = Cli::try_parse_from([
            "strand",
            "cert",
            "ca",
            "--out",
            ca.to_str().unwrap(),
            "--cluster-id",
            "x",
            "--days",
            "5",
        ])
        .unwrap();
        assert!(crate::run(&cli).unwrap().contains("ca.pem"));
        let cli = Cli::try_parse_from([
            "strand",
            "cert",
            "node",
            "--ca",
            ca.to_str().unwrap(),
            "--node-id",
            "1",
            "--host",
            "a",
            "--host",
            "b",
            "--ip",
            "127.0.0.1",
            "--out",
            node.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Cert(CertCommand::Node(args)) = &cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.hosts, ["a", "b"]);
        assert_eq!(args.days, 365);
        assert!(crate::run(&cli).unwrap().contains("strand-node-1"));
        assert!(Cli::try_parse_from([
            "strand",
            "cert",
            "node",
            "--ca",
            "d",
            "--node-id",
            "1",
            "--ip",
            "nope",
            "--out",
            "o"
        ])
        .is_err());
    }
}
