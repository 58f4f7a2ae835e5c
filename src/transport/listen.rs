//! Where a server listens: on exactly the addresses it announces (a port scanner or a
//! stranger on another network of the login node finds nothing), or on one address
//! the user chose with `--bind`.
//!
//! The announced entries are names or addresses; each is resolved here and every
//! address it gives must belong to this host. A name this host cannot resolve is
//! announced as given (other hosts may know it) and not listened on. The QUIC
//! endpoints share one port number, and so do the TCP listeners (the QUIC one when
//! free), so that the access file can append one port to every entry.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Where to listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Every address the announced entries resolve to here, on this port (0: a free one).
    Announced { port: u16 },
    /// Exactly this address (`0.0.0.0:P`: every address, behind NAT or a port forward).
    On(SocketAddr),
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "the announced address {what} is not an address of this host, so the server cannot listen there; announce this host's own name or address (--advertise, --interface), or listen on every address with --bind 0.0.0.0:PORT (behind NAT or a port forward)"
    )]
    NotLocal { what: String },
    #[error(
        "none of the announced addresses ({entries}) resolves to an address of this host; announce one it has (--advertise, --interface), or listen on every address with --bind 0.0.0.0:PORT"
    )]
    Nothing { entries: String },
    #[error("cannot list this host's network interfaces: {0}")]
    Interfaces(nix::Error),
    #[error("cannot listen on UDP {addr}: {source}")]
    Udp { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen on TCP {addr}: {source}")]
    Tcp { addr: SocketAddr, source: std::io::Error },
    #[error("cannot set up a listening socket: {0}")]
    Local(std::io::Error),
}

/// The addresses of this host's interfaces that are up (loopback included).
fn host_addresses() -> Result<Vec<(String, IpAddr)>, ListenError> {
    let mut out = Vec::new();
    for a in nix::ifaddrs::getifaddrs().map_err(ListenError::Interfaces)? {
        if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(sa) = a.address.as_ref() else { continue };
        let ip: IpAddr = match (sa.as_sockaddr_in(), sa.as_sockaddr_in6()) {
            (Some(v4), _) => v4.ip().into(),
            (_, Some(v6)) => v6.ip().into(),
            _ => continue,
        };
        out.push((a.interface_name.clone(), ip));
    }
    Ok(out)
}

/// Whether a socket can be bound to `ip` on this host: one of its interfaces' addresses,
/// or any loopback address (Linux answers the whole of 127.0.0.0/8 on `lo`).
fn is_local(ip: IpAddr, host: &[(String, IpAddr)]) -> bool {
    ip.is_loopback() || host.iter().any(|(_, a)| *a == ip)
}

fn resolve(entry: &str) -> Option<Vec<IpAddr>> {
    let name = entry.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(vec![ip]);
    }
    let ips: Vec<IpAddr> = (name, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    (!ips.is_empty()).then_some(ips)
}

/// What a server announces by default: this host's name, then, when this host resolves
/// its own name to nothing or only to a loopback address (Debian's `127.0.1.1 host`),
/// the IPv4 addresses of its other interfaces, since other hosts resolve the name
/// through their own DNS to one of those; then `127.0.0.1` when `loopback`.
pub fn default_announced(host: &str, loopback: bool) -> Result<Vec<String>, ListenError> {
    let mut out = vec![host.to_string()];
    let names_loopback_only = resolve(host).is_none_or(|ips| ips.iter().all(IpAddr::is_loopback));
    if names_loopback_only {
        for (_, ip) in host_addresses()? {
            if let IpAddr::V4(v4) = ip
                && !v4.is_loopback()
                && !v4.is_link_local()
                && !out.contains(&ip.to_string())
            {
                out.push(ip.to_string());
            }
        }
    }
    if loopback && !out.iter().any(|e| e == "127.0.0.1") {
        out.push("127.0.0.1".into());
    }
    Ok(out)
}

/// The addresses to listen on for the announced `entries`, in their order, without
/// repeats.
pub fn listen_ips(entries: &[String]) -> Result<Vec<IpAddr>, ListenError> {
    let host = host_addresses()?;
    let mut ips = Vec::new();
    for entry in entries {
        let Some(resolved) = resolve(entry) else { continue };
        for ip in resolved {
            if !is_local(ip, &host) {
                let what = if entry.trim_start_matches('[').trim_end_matches(']') == ip.to_string() {
                    format!("\"{entry}\"")
                } else {
                    format!("\"{entry}\" ({ip})")
                };
                return Err(ListenError::NotLocal { what });
            }
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    if ips.is_empty() {
        return Err(ListenError::Nothing {
            entries: entries.join(", "),
        });
    }
    Ok(ips)
}

/// Bind one socket per address of `ips`, all on one port: `port`, or when it is 0 the
/// one the kernel gives the first (tried again with another if a later address has it
/// taken). `bind` makes a socket and returns its port.
pub fn bind_all<S>(
    ips: &[IpAddr],
    port: u16,
    mut bind: impl FnMut(SocketAddr) -> std::io::Result<(S, u16)>,
) -> Result<(Vec<S>, u16), (SocketAddr, std::io::Error)> {
    const TRIES: usize = 20;
    let mut last = None;
    for _ in 0..TRIES {
        let mut sockets = Vec::with_capacity(ips.len());
        let mut chosen = port;
        let mut retry = false;
        for &ip in ips {
            let addr = SocketAddr::new(ip, chosen);
            match bind(addr) {
                Ok((s, p)) => {
                    chosen = p;
                    sockets.push(s);
                }
                Err(e) if port == 0 && !sockets.is_empty() && e.kind() == std::io::ErrorKind::AddrInUse => {
                    last = Some((addr, e));
                    retry = true;
                    break;
                }
                Err(e) => return Err((addr, e)),
            }
        }
        if !retry {
            return Ok((sockets, chosen));
        }
    }
    Err(last.expect("a failed try"))
}

/// UDP sockets for the QUIC endpoints and TCP listeners for the fallback, on `ips`:
/// the TCP listeners on the UDP port number when it is free on every address.
pub fn sockets(ips: &[IpAddr], port: u16) -> Result<(Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>), ListenError> {
    let (udp, udp_port) = bind_all(ips, port, |a| {
        let s = std::net::UdpSocket::bind(a)?;
        let p = s.local_addr()?.port();
        Ok((s, p))
    })
    .map_err(|(addr, source)| ListenError::Udp { addr, source })?;
    let tcp = |a: SocketAddr| {
        let l = std::net::TcpListener::bind(a)?;
        l.set_nonblocking(true)?;
        let p = l.local_addr()?.port();
        Ok((l, p))
    };
    let (tcp, _) = match bind_all(ips, udp_port, tcp) {
        Ok(t) => t,
        Err(_) => bind_all(ips, 0, tcp).map_err(|(addr, source)| ListenError::Tcp { addr, source })?,
    };
    Ok((udp, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_entries_are_listened_on_and_strangers_refused() {
        let ips = listen_ips(&["127.0.0.1".into(), "localhost".into(), "[::1]".into()]).unwrap();
        assert!(ips.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()), "{ips:?}");
        assert_eq!(ips.iter().filter(|ip| ip.to_string() == "127.0.0.1").count(), 1, "{ips:?}");
        // TEST-NET-3 is nobody's address.
        let e = listen_ips(&["127.0.0.1".into(), "203.0.113.9".into()]).unwrap_err();
        assert!(
            e.to_string().contains("address \"203.0.113.9\" is not an address of this host"),
            "{e}"
        );
        assert!(e.to_string().contains("--bind 0.0.0.0:PORT"), "{e}");
        // A name nobody resolves is announced but not listened on; alone it is refused.
        let ips = listen_ips(&["no-such-host.invalid".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        let e = listen_ips(&["no-such-host.invalid".into()]).unwrap_err();
        assert!(matches!(e, ListenError::Nothing { .. }), "{e}");
    }

    #[test]
    fn one_port_for_every_address() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let (udp, tcp) = sockets(&ips, 0).unwrap();
        let ports: Vec<u16> = udp.iter().map(|s| s.local_addr().unwrap().port()).collect();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0], ports[1]);
        assert_ne!(ports[0], 0);
        let got: Vec<IpAddr> = udp.iter().map(|s| s.local_addr().unwrap().ip()).collect();
        assert_eq!(got, ips);
        let tports: Vec<u16> = tcp.iter().map(|s| s.local_addr().unwrap().port()).collect();
        assert_eq!(tports[0], tports[1]);
        // A port taken on the second address (by another socket) makes the first try
        // again with a new one when the port was left to the kernel.
        let mut calls = 0;
        let (got, port) = bind_all(&ips, 0, |a| {
            calls += 1;
            if calls == 2 {
                return Err(std::io::Error::from(std::io::ErrorKind::AddrInUse));
            }
            let s = std::net::UdpSocket::bind(a)?;
            let p = s.local_addr()?.port();
            Ok((s, p))
        })
        .unwrap();
        assert_eq!(calls, 4);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|s| s.local_addr().unwrap().port() == port));
        // A port the user chose is not changed.
        let taken = &udp[0];
        let e = bind_all(&ips[..1], taken.local_addr().unwrap().port(), |a| {
            let s = std::net::UdpSocket::bind(a)?;
            Ok((s, 0))
        })
        .err()
        .unwrap();
        assert_eq!(e.1.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn the_default_announces_the_host_name_first_and_loopback_last() {
        let got = default_announced("localhost", true).unwrap();
        assert_eq!(got.first().map(String::as_str), Some("localhost"));
        assert_eq!(got.last().map(String::as_str), Some("127.0.0.1"));
        // localhost names loopback only: every other interface's IPv4 address follows.
        for (_, ip) in host_addresses().unwrap() {
            if let IpAddr::V4(v4) = ip
                && !v4.is_loopback()
                && !v4.is_link_local()
            {
                assert!(got.contains(&ip.to_string()), "{ip} missing from {got:?}");
            }
        }
        let got = default_announced("127.0.0.1", false).unwrap();
        assert!(!got[1..].contains(&"127.0.0.1".to_string()), "{got:?}");
    }
}
