//! QUIC endpoints and TCP fallback connections ([`link`]), certificates, the access
//! file and authentication.
//!
//! The server makes a fresh self-signed certificate and a random token at every start
//! and writes both, with its addresses, into `access.toml` (mode 0600). Peers pin
//! exactly that certificate (byte for byte, plus the TLS 1.3 handshake signature) and
//! present the token in their first message. The token is compared in constant time and
//! never printed, logged or put on a command line.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::proto::PROTOCOL_VERSION;

mod link;
pub mod listen;

pub use link::{Conn, Dialed, LinkError, LinkKind, RecvHalf, SendHalf, Transport, connect, host_id};

/// TLS server name used by peers; the certificate carries it.
pub const SERVER_NAME: &str = "drover";
const ALPN: &[u8] = b"drover/1";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read access file \"{path}\": {source}")]
    ReadAccess { path: PathBuf, source: std::io::Error },
    #[error("access file \"{path}\" is not valid: {reason}")]
    BadAccess { path: PathBuf, reason: String },
    #[error("cannot write access file \"{path}\": {source}")]
    WriteAccess { path: PathBuf, source: std::io::Error },
    #[error("cannot create the server folder \"{path}\": {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Cert(String),
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen on TCP {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: std::io::Error },
}

/// The secret token; never printed.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf).expect("the OS random source works");
        Token(buf.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &str) -> bool {
        self.0.len() == other.len() && bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Contents of `access.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    pub version: u32,
    /// "host:port" strings, tried in order (QUIC).
    pub addresses: Vec<String>,
    /// The same hosts' TCP ports (TLS over TCP, where UDP does not get through).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_addresses: Vec<String>,
    /// The server certificate (PEM).
    pub cert: String,
    pub token: Token,
    /// The server's Unix socket for peers on its host ([`link::host_id`] equal to
    /// `unix_host`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_host: Option<String>,
    /// The dashboard's URL with its read-only key (not the token), when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// How this process dials (`--transport`; never in the file).
    #[serde(skip)]
    pub transport: Transport,
}

impl Access {
    pub fn load(path: &Path) -> Result<Self, TransportError> {
        let text = std::fs::read_to_string(path).map_err(|source| TransportError::ReadAccess { path: path.into(), source })?;
        // The token in it lets anyone run commands as this user on every worker: a copy
        // others can read is refused, as ssh refuses a readable private key.
        let mode = std::fs::metadata(path)
            .map_err(|source| TransportError::ReadAccess { path: path.into(), source })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(TransportError::BadAccess {
                path: path.into(),
                reason: format!(
                    "it may be read by others (mode {:04o}) and its token runs commands as you; make it private with `chmod 600 {}`",
                    mode & 0o7777,
                    path.display()
                ),
            });
        }
        Self::parse(path, &text)
    }

    /// Parse and check an access file's text (`path` names it in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self, TransportError> {
        let access: Access = toml::from_str(text).map_err(|e| TransportError::BadAccess {
            path: path.into(),
            reason: crate::config::toml_error_line(path, text, &e),
        })?;
        if access.version != PROTOCOL_VERSION {
            return Err(TransportError::BadAccess {
                path: path.into(),
                reason: format!(
                    "protocol version {} but this drover speaks {PROTOCOL_VERSION}; use the same drover build as the server",
                    access.version
                ),
            });
        }
        access
            .cert_der()
            .map_err(|reason| TransportError::BadAccess { path: path.into(), reason })?;
        Ok(access)
    }

    /// Dial with `transport`, and at `address` (HOST:PORT, an SSH port forward say)
    /// instead of the addresses the server announced, for both QUIC and TCP.
    pub fn dial_via(&mut self, transport: Transport, address: Option<&str>) {
        self.transport = transport;
        if let Some(a) = address {
            self.addresses = vec![a.to_string()];
            self.tcp_addresses = vec![a.to_string()];
            self.unix = None;
        }
    }

    pub fn cert_der(&self) -> Result<CertificateDer<'static>, String> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).map_err(|e| format!("cert is not a PEM certificate ({e})"))
    }

    /// Write atomically with mode 0600 (a temporary file in the same folder, renamed).
    pub fn write(&self, path: &Path) -> Result<(), TransportError> {
        let werr = |source| TransportError::WriteAccess { path: path.into(), source };
        let text = toml::to_string(self).map_err(|e| werr(std::io::Error::other(e)))?;
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(werr)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(werr)?;
        f.write_all(text.as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&tmp, path).map_err(werr)
    }
}

/// The address of a network interface (`ib0`, `hsn0`, ...), IPv4 preferred.
pub fn interface_addr(name: &str) -> Result<std::net::IpAddr, String> {
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(|e| format!("cannot list network interfaces: {e}"))?
        .collect();
    let mut names: Vec<String> = addrs.iter().map(|a| a.interface_name.clone()).collect();
    names.sort();
    names.dedup();
    let mut v6 = None;
    for a in addrs.iter().filter(|a| a.interface_name == name) {
        let Some(sa) = a.address.as_ref() else { continue };
        if let Some(v4) = sa.as_sockaddr_in() {
            return Ok(std::net::IpAddr::V4(v4.ip()));
        }
        if let Some(s6) = sa.as_sockaddr_in6()
            && (s6.ip().segments()[0] & 0xffc0) != 0xfe80
        {
            v6 = Some(std::net::IpAddr::V6(s6.ip()));
        }
    }
    v6.ok_or_else(|| {
        if names.iter().any(|n| n == name) {
            format!("interface \"{name}\" has no usable IP address")
        } else {
            format!(
                "no network interface \"{name}\" on this host; interfaces here: {}",
                names.join(", ")
            )
        }
    })
}

/// Create the server folder, private to the user.
pub fn make_private_dir(dir: &Path) -> Result<(), TransportError> {
    let derr = |source| TransportError::Dir { path: dir.into(), source };
    std::fs::create_dir_all(dir).map_err(derr)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(derr)
}

/// ring's suites with AES-128-GCM first (ring lists AES-256 first): every block a
/// remote worker sends is encrypted once and decrypted once, and AES-128's 10 rounds
/// against 14 cut about 5% of QUIC's CPU per byte (docs/PERFORMANCE.md).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// Knobs of QUIC's bulk path, measured one by one by `examples/quic_bulk.rs` (see
/// docs/PERFORMANCE.md, "QUIC bulk path"): on a link of 1500 bytes, segmentation
/// offload doubles what one core sends; on larger links (jumbo frames, IPoIB,
/// loopback), datagrams as large as the link without offload (which quinn then breaks:
/// its path MTU falls back to 1200) cut the CPU per byte by 2-2.6x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// The largest UDP payload MTU discovery may probe for (quinn's default, 1452,
    /// stays within Ethernet's 1500 bytes). A lost probe only ends the search.
    pub mtu_upper_bound: u16,
    /// UDP segmentation offload: one system call sends many datagrams.
    pub gso: bool,
    /// BBR instead of Cubic. Cubic halves its window at every loss: with 1% random
    /// loss at 20 ms it moves about 1 MB/s per connection (docs/PERFORMANCE.md).
    pub bbr: bool,
}

/// The largest UDP payload: what endpoints accept, whatever they send.
pub const MAX_UDP_PAYLOAD: u16 = 65527;

impl Tuning {
    /// quinn's own defaults (and what the server sends with: its messages are small).
    pub const QUINN: Tuning = Tuning {
        mtu_upper_bound: 1452,
        gso: true,
        bbr: false,
    };

    /// For a link of `mtu` bytes (IPv4 and UDP headers taken off).
    pub fn for_link_mtu(mtu: u32) -> Tuning {
        if mtu <= 1500 {
            Tuning::QUINN
        } else {
            Tuning {
                mtu_upper_bound: mtu.saturating_sub(28).clamp(1200, u32::from(MAX_UDP_PAYLOAD)) as u16,
                gso: false,
                bbr: false,
            }
        }
    }

    /// For sending to `peer`: by the MTU of the interface this host would use to reach
    /// it (the source address a connected UDP socket gets, matched to its interface),
    /// quinn's defaults when that cannot be told; BBR across a network (a loopback
    /// peer loses nothing and waits for nothing: Cubic), unless `DROVER_QUIC_CC` says
    /// `cubic` or `bbr`.
    pub fn for_peer(peer: SocketAddr) -> Tuning {
        let by_link = link_mtu_towards(peer).map_or(Tuning::QUINN, Tuning::for_link_mtu);
        Tuning {
            bbr: bbr_towards(peer.ip()),
            ..by_link
        }
    }
}

/// Whether connections with `peer` use BBR: across a network, not over loopback,
/// unless `DROVER_QUIC_CC` is `cubic` or `bbr`.
pub fn bbr_towards(peer: std::net::IpAddr) -> bool {
    static CHOSEN: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| match std::env::var("DROVER_QUIC_CC").as_deref() {
        Ok("cubic") => Some(false),
        Ok("bbr") => Some(true),
        _ => None,
    });
    chosen.unwrap_or(!peer.is_loopback())
}

/// The server's transport (it sends tasks, constants and answers: quinn's defaults but
/// for the congestion controller, [`Tuning::bbr`], chosen per peer by [`bbr_towards`]).
pub fn server_transport(bbr: bool) -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config_tuned(SERVER_IDLE, Tuning { bbr, ..Tuning::QUINN }))
}

/// The MTU of the interface that carries traffic to `peer`, if it can be told.
fn link_mtu_towards(peer: SocketAddr) -> Option<u32> {
    let bind: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
    let probe = std::net::UdpSocket::bind(bind).ok()?;
    probe.connect(peer).ok()?;
    let local = probe.local_addr().ok()?.ip();
    let name = nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        let sa = a.address.as_ref()?;
        let ip: std::net::IpAddr = match (sa.as_sockaddr_in(), sa.as_sockaddr_in6()) {
            (Some(v4), _) => v4.ip().into(),
            (_, Some(v6)) => v6.ip().into(),
            _ => return None,
        };
        (ip == local).then(|| a.interface_name.clone())
    })?;
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A QUIC endpoint on `bind` (a server's when `server` is given) that accepts
/// datagrams of up to [`MAX_UDP_PAYLOAD`] bytes: quinn's endpoints cap them at 1472
/// otherwise, whatever MTU discovery finds.
pub fn endpoint(server: Option<quinn::ServerConfig>, bind: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    endpoint_on(server, std::net::UdpSocket::bind(bind)?)
}

/// The socket buffers drover asks for, each way. A server's socket takes every
/// worker's datagrams: the kernel's default (208 KiB) fills within a fraction of a
/// millisecond of a burst, and every datagram it drops is a loss to the sender's
/// congestion controller. Measured through a 20 ms relay (quic_bulk): 15-20 MB/s per
/// connection with the default, 155 MB/s with 4 MiB.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Ask for [`SOCKET_BUFFER`] each way on `socket` (root may pass the system's
/// `net.core.rmem_max` / `wmem_max`; others get up to them). Returns the receive
/// buffer obtained, in bytes of payload (the kernel reports twice that).
pub fn enlarge_socket_buffers(socket: &impl std::os::fd::AsFd) -> usize {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    ask_send_buffer(socket, SOCKET_BUFFER);
    getsockopt(socket, sockopt::RcvBuf).map_or(0, |b| b / 2)
}

/// Ask for a send buffer of `bytes` (past `net.core.wmem_max` as root, else up to it).
fn ask_send_buffer(socket: &impl std::os::fd::AsFd, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::SndBufForce, &bytes).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &bytes);
    }
}

/// What a Unix link's sender may have in flight: the kernel's default (208 KiB) makes
/// a block of megabytes leave in many small writes, each waking the reader.
const UNIX_SEND_BUFFER: usize = 4 << 20;

/// Ask for [`UNIX_SEND_BUFFER`] on a Unix stream socket (a Unix stream's receive
/// buffer is the sender's send buffer).
pub fn enlarge_send_buffer(socket: &impl std::os::fd::AsFd) {
    ask_send_buffer(socket, UNIX_SEND_BUFFER);
}

/// The server's Unix socket in its private folder, for peers on its host. None when
/// the path is too long for a socket address (108 bytes) or binding fails: those peers
/// then dial over the network like the others.
pub fn unix_listener(dir: &Path) -> Option<(tokio::net::UnixListener, String)> {
    let path = dir.join("link.sock");
    let _ = std::fs::remove_file(&path);
    match tokio::net::UnixListener::bind(&path) {
        Ok(l) => Some((l, path.to_string_lossy().into_owned())),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no Unix socket for same-host peers");
            None
        }
    }
}

/// [`endpoint`] on a socket already bound.
pub fn endpoint_on(server: Option<quinn::ServerConfig>, socket: std::net::UdpSocket) -> std::io::Result<quinn::Endpoint> {
    let got = enlarge_socket_buffers(&socket);
    if server.is_some() && got < SOCKET_BUFFER / 4 {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            tracing::info!(
                receive_buffer = got,
                "the QUIC socket's receive buffer is small (net.core.rmem_max); datagrams from many workers at once may be dropped: an administrator can raise it with sysctl -w net.core.rmem_max={SOCKET_BUFFER}"
            );
        });
    }
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// The server's transport configuration, and the clients' before [`tune_client`].
fn transport_config(idle: Duration) -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config_tuned(idle, Tuning::QUINN))
}

/// `config` with its transport tuned for sending to `peer` (workers send results in
/// bulk).
pub fn tune_client(config: &mut quinn::ClientConfig, idle: Duration, peer: SocketAddr) {
    config.transport_config(Arc::new(transport_config_tuned(idle, Tuning::for_peer(peer))));
}

/// drover's QUIC transport configuration with `tuning` (benchmarks compare tunings).
pub fn transport_config_tuned(idle: Duration, tuning: Tuning) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // A third of the idle timeout: a quiet connection survives two lost pings. Workers
    // send their load every few seconds anyway; faster pings cost the server CPU per
    // connection (10,000 workers pinging every 2 s kept a core 16% busy).
    t.keep_alive_interval(Some(idle / 3));
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle).expect("valid idle timeout")));
    // Bulk results: windows far above any cluster network's bandwidth-delay product
    // (100 Gb/s x 100 us is 1.25 MB), yet small enough that the bytes a peer holds
    // unread or unacknowledged stay a fraction of a block: memory is bounded by the
    // applications' own back-pressure, not by QUIC buffers.
    t.stream_receive_window(quinn::VarInt::from_u32(8 << 20));
    t.receive_window(quinn::VarInt::from_u32(16 << 20));
    t.send_window(8 << 20);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(tuning.mtu_upper_bound);
    t.mtu_discovery_config(Some(mtu));
    t.enable_segmentation_offload(tuning.gso);
    if tuning.bbr {
        t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    }
    t
}

/// A server identity: certificate (PEM and DER), its QUIC server config, and the same
/// TLS configuration for TCP.
pub struct ServerIdentity {
    pub cert_pem: String,
    pub config: quinn::ServerConfig,
    pub tls: Arc<rustls::ServerConfig>,
}

/// How long the server keeps a silent connection.
pub const SERVER_IDLE: Duration = Duration::from_secs(60);

/// Make a fresh self-signed certificate and the QUIC server config using it.
pub fn server_identity(extra_names: &[String]) -> Result<ServerIdentity, TransportError> {
    let mut names = vec![SERVER_NAME.to_string()];
    names.extend(extra_names.iter().cloned());
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| TransportError::Cert(e.to_string()))?;
    let cert_der = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let tcp = Arc::new(tls.clone());
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config(SERVER_IDLE));
    Ok(ServerIdentity {
        cert_pem: ck.cert.pem(),
        config,
        tls: tcp,
    })
}

/// Accepts exactly one certificate, and checks the handshake signature with it.
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    mismatch: Arc<AtomicBool>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            self.mismatch.store(true, Ordering::SeqCst);
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client config that trusts only `cert`; the flag is set when a server
/// presented another certificate.
fn tls_client(cert: CertificateDer<'static>) -> Result<(rustls::ClientConfig, Arc<AtomicBool>), TransportError> {
    let mismatch = Arc::new(AtomicBool::new(false));
    let verifier = PinnedCert {
        cert,
        provider: provider(),
        mismatch: mismatch.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok((tls, mismatch))
}

/// A QUIC client config that trusts only `cert`; the flag is set when a server
/// presented another certificate.
/// Its transport is tuned for sending to `peer` ([`Tuning::for_peer`]) by
/// [`tune_client`].
pub fn client_config(cert: CertificateDer<'static>, idle: Duration) -> Result<(quinn::ClientConfig, Arc<AtomicBool>), TransportError> {
    let (tls, mismatch) = tls_client(cert)?;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config(idle));
    Ok((config, mismatch))
}

/// Why connecting to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "TLS handshake with {addr} failed: the server's certificate does not match the certificate pinned in the access file; the access file is stale or belongs to another server"
    )]
    CertificateMismatch { addr: String },
    #[error("cannot reach the server at {tried}: {reason}; is `drover server` running, and is the address reachable from here?")]
    Unreachable { tried: String, reason: String },
    #[error("bad address \"{0}\" in the access file; expected host:port")]
    BadAddress(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// The client configuration that pins an access file's certificate (for tools that
/// open many connections over one endpoint, such as the scale benchmark's load
/// generator).
pub fn client_for(access: &Access, idle: Duration) -> Result<quinn::ClientConfig, ConnectError> {
    let cert = access.cert_der().map_err(|reason| TransportError::BadAccess {
        path: PathBuf::from("access file"),
        reason,
    })?;
    Ok(client_config(cert, idle)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_redacted_and_compared_exactly() {
        let t = Token::generate();
        assert_eq!(t.expose().len(), 64);
        assert!(!format!("{t:?}").contains(t.expose()));
        assert!(t.matches(t.expose()));
        assert!(!t.matches(&t.expose()[1..]));
        let mut other = t.expose().to_string();
        other.replace_range(0..1, if other.starts_with('0') { "1" } else { "0" });
        assert!(!t.matches(&other));
    }

    #[test]
    fn interfaces_resolve_to_their_address() {
        assert_eq!(interface_addr("lo").unwrap(), std::net::IpAddr::from([127, 0, 0, 1]));
        let e = interface_addr("ib9").unwrap_err();
        assert!(e.contains("\"ib9\"") && e.contains("lo"), "{e}");
    }

    #[test]
    fn access_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let id = server_identity(&[]).unwrap();
        let a = Access {
            version: PROTOCOL_VERSION,
            addresses: vec!["127.0.0.1:9".into()],
            tcp_addresses: vec!["127.0.0.1:9".into()],
            cert: id.cert_pem,
            token: Token::generate(),
            unix: Some("/run/x/link.sock".into()),
            unix_host: host_id(),
            dashboard: Some("http://127.0.0.1:8/?key=abc".into()),
            transport: Transport::Tcp,
        };
        let p = dir.path().join("access.toml");
        a.write(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let b = Access::load(&p).unwrap();
        assert_eq!(b.token, a.token);
        assert_eq!(b.cert_der().unwrap(), a.cert_der().unwrap());
        assert_eq!(b.dashboard, a.dashboard);
        assert_eq!((&b.unix, &b.unix_host), (&a.unix, &a.unix_host));
        assert!(a.unix_host.as_ref().is_some_and(|h| h.contains("/net:[")), "{:?}", a.unix_host);
        assert_eq!(b.tcp_addresses, a.tcp_addresses);
        assert_eq!(b.transport, Transport::Auto, "how to dial is this process's choice, not the file's");
    }
}
