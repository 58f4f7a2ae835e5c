//! Bytes per second of one QUIC connection carrying drover's result frames (issue 15):
//! a client sends BYTES in frames of FRAME_MIB (as a worker sends blocks) over one or
//! several streams of one connection to a server in the same process that reads them
//! as the driver does (`read_head`, `read_payload`). Each knob of
//! [`drover::transport::Tuning`] can be set alone, to measure what each one gives.
//!
//! Run: quic_bulk [--gib 2] [--frame-mib 8 | --frame-kib N] [--streams 1]
//!                [--mtu 1452|8972|65527] [--no-gso] [--server-no-gso] [--auto]
//!                [--addr 127.0.0.1] [--server-port P --via RELAY_ADDR] [--gap-ms G]
//!                [--cc cubic|bbr|newreno] [--initial-window BYTES]
//!                [--ack-threshold N] [--chunks] [--tcp]
//! (`--auto`: the sender tuned as drover tunes workers, from the link's MTU; `--via`:
//! dial a relay, e.g. examples/delay_relay, in front of the server's fixed port;
//! `--gap-ms`: an idle gap after each frame, as between a worker's results, and the
//! figures count only the time spent sending; `--cc`, `--initial-window`: the
//! sender's congestion controller)
//! `--ack-threshold N`: the sender asks the reader to acknowledge every N+1 packets
//! (QUIC's ACK frequency extension; 1 is QUIC's default); `--chunks`: the payload is
//! handed to quinn as shared bytes (`write_chunk`) instead of copied in (`write_all`).
//! `--tcp`: the same frames over drover's TLS-over-TCP link instead (`Conn::tcp`,
//! `write_frame_shared`), for comparison; only `--gib`, `--frame-mib`/`--frame-kib`
//! and `--addr` apply.
//!
//! The sender and the reader each run on a thread of their own (a single-threaded
//! runtime each, with its endpoint), so each side's CPU time is told apart.
//! Prints one JSON line: GB/s, CPU seconds (the process, the sender's thread, the
//! reader's thread), bytes per CPU second, and bytes per second of the busier side's
//! CPU: what one connection moves when each side has a core of its own. Over loopback
//! the kernel's receive path runs in the sender's system calls, so the sender's thread
//! also pays for what a receiving host's kernel would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::proto::{self, Hello, PROTOCOL_VERSION, PeerMsg, Role};
use drover::transport::{self, Tuning};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// This process's CPU time (user + system), from /proc (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// The calling thread's CPU time.
fn thread_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/thread-self/stat")
}

fn cpu_seconds_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).expect("/proc stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    (fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime")) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut gib = 2.0f64;
    let mut frame_mib = 8usize;
    let mut streams = 1usize;
    let mut tuning = Tuning::QUINN;
    let mut auto = false;
    let mut server_gso = true;
    let mut addr = String::from("127.0.0.1");
    let mut frame_kib: Option<usize> = None;
    let mut server_port = 0u16;
    let mut via: Option<SocketAddr> = None;
    let mut gap = Duration::ZERO;
    let mut cc = String::from("cubic");
    let mut initial_window: Option<u64> = None;
    let mut ack_threshold: Option<u32> = None;
    let mut chunks = false;
    let mut tcp = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--gib" => gib = val()?.parse()?,
            "--frame-mib" => frame_mib = val()?.parse()?,
            "--streams" => streams = val()?.parse()?,
            "--mtu" => tuning.mtu_upper_bound = val()?.parse()?,
            "--no-gso" => tuning.gso = false,
            "--server-no-gso" => server_gso = false,
            "--addr" => addr = val()?,
            "--auto" => auto = true,
            "--frame-kib" => frame_kib = Some(val()?.parse()?),
            "--server-port" => server_port = val()?.parse()?,
            "--via" => via = Some(val()?.parse()?),
            "--gap-ms" => gap = Duration::from_millis(val()?.parse()?),
            "--cc" => cc = val()?,
            "--initial-window" => initial_window = Some(val()?.parse()?),
            "--ack-threshold" => ack_threshold = Some(val()?.parse()?),
            "--chunks" => chunks = true,
            "--tcp" => tcp = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let idle = Duration::from_secs(60);
    let id = transport::server_identity(&[])?;
    let mut server_config = id.config;
    let server_tuning = Tuning { gso: server_gso, ..tuning };
    server_config.transport_config(Arc::new(transport::transport_config_tuned(idle, server_tuning)));
    let bind: SocketAddr = format!("{addr}:{server_port}").parse()?;

    let frame = frame_kib.map_or(frame_mib << 20, |k| k << 10);
    let frames = ((gib * (1u64 << 30) as f64) as usize).div_ceil(frame);
    let total = (frames * frame) as u64;
    if tcp {
        return over_tcp(id.tls, &id.cert_pem, &addr, frame, frames, idle);
    }

    // The driver's side, on a thread of its own: read frames until every stream ends.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = std::thread::Builder::new().name("reader".into()).spawn(move || {
        one_thread(async move {
            let server = transport::endpoint(Some(server_config), bind).expect("server endpoint");
            addr_tx.send(server.local_addr().expect("address")).expect("address to the sender");
            let conn = server.accept().await.expect("incoming").await.expect("handshake");
            let cpu0 = thread_cpu_seconds();
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let (_, mut recv) = conn.accept_bi().await.expect("stream");
                tasks.push(tokio::spawn(async move {
                    let mut got = 0u64;
                    loop {
                        match proto::read_head::<_, PeerMsg>(&mut recv).await {
                            Ok((_, len)) => {
                                let p = proto::read_payload(&mut recv, len).await.expect("payload");
                                got += p.len() as u64;
                            }
                            Err(_) => return got,
                        }
                    }
                }));
            }
            let mut got = 0;
            for t in tasks {
                got += t.await.expect("reader");
            }
            let end = Instant::now();
            let cpu = thread_cpu_seconds() - cpu0;
            let _ = done_tx.send(());
            // Stay until the sender has its figures (closing would cut its stats).
            let _ = conn.closed().await;
            (got, end, cpu)
        })
    })?;
    let server_addr = addr_rx.recv()?;

    let cert = CertificateDer::from_pem_slice(id.cert_pem.as_bytes())?;
    let (client_config, _) = transport::client_config(cert, idle)?;
    let mut client_config = client_config;
    if auto {
        tuning = Tuning::for_peer(server_addr);
    }
    let mut sender_transport = transport::transport_config_tuned(idle, tuning);
    match cc.as_str() {
        "cubic" => {
            let mut c = quinn::congestion::CubicConfig::default();
            if let Some(w) = initial_window {
                c.initial_window(w);
            }
            sender_transport.congestion_controller_factory(Arc::new(c));
        }
        "bbr" => {
            let mut c = quinn::congestion::BbrConfig::default();
            if let Some(w) = initial_window {
                c.initial_window(w);
            }
            sender_transport.congestion_controller_factory(Arc::new(c));
        }
        "newreno" => {
            let mut c = quinn::congestion::NewRenoConfig::default();
            if let Some(w) = initial_window {
                c.initial_window(w);
            }
            sender_transport.congestion_controller_factory(Arc::new(c));
        }
        other => return Err(format!("--cc {other}: cubic, bbr or newreno").into()),
    }
    if let Some(n) = ack_threshold {
        let mut a = quinn::AckFrequencyConfig::default();
        a.ack_eliciting_threshold(quinn::VarInt::from_u32(n));
        sender_transport.ack_frequency_config(Some(a));
    }
    client_config.transport_config(Arc::new(sender_transport));
    let payload = bytes::Bytes::from(vec![7u8; frame]);
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    // The worker's side, on a thread of its own.
    let sender = std::thread::Builder::new().name("sender".into()).spawn(move || {
        one_thread(async move {
            let client = transport::endpoint(None, format!("{addr}:0").parse().expect("address")).expect("client endpoint");
            let conn = client
                .connect_with(client_config, via.unwrap_or(server_addr), transport::SERVER_NAME)
                .expect("connect")
                .await
                .expect("handshake");
            let cpu0 = thread_cpu_seconds();
            let mut senders = Vec::new();
            for s in 0..streams {
                let (mut send, recv) = conn.open_bi().await.expect("stream");
                let payload = payload.clone();
                let mine = (s..frames).step_by(streams).count();
                senders.push(tokio::spawn(async move {
                    let hello = PeerMsg::Hello(Hello {
                        version: PROTOCOL_VERSION,
                        role: Role::Client,
                        token: String::new(),
                        worker: None,
                    });
                    for _ in 0..mine {
                        if chunks {
                            let head = proto::encode(&hello, payload.len() as u64).expect("head");
                            send.write_chunk(bytes::Bytes::from(head)).await.expect("send");
                            send.write_chunk(payload.clone()).await.expect("send");
                        } else {
                            proto::write_frame(&mut send, &hello, &payload).await.expect("send");
                        }
                        if !gap.is_zero() {
                            tokio::time::sleep(gap).await;
                        }
                    }
                    send.finish().expect("finish");
                    // Keep the receive half until the server has read everything.
                    recv
                }));
            }
            let mut keep = Vec::new();
            for s in senders {
                keep.push(s.await.expect("sender"));
            }
            // Until the reader has everything: its acknowledgements still cost the sender.
            let _ = done_rx.await;
            let cpu = thread_cpu_seconds() - cpu0;
            let stats = conn.stats();
            conn.close(0u32.into(), b"done");
            client.wait_idle().await;
            (cpu, stats)
        })
    })?;
    let (send_cpu, stats) = sender.join().map_err(|_| "the sender panicked")?;
    let (got, end, recv_cpu) = reader.join().map_err(|_| "the reader panicked")?;
    let gaps = gap.as_secs_f64() * frames.div_ceil(streams) as f64;
    let secs = (end - t0).as_secs_f64() - gaps;
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"mtu_upper_bound\": {}, \"gso\": {}, \"streams\": {streams}, \"frame_mib\": {frame_mib}, \"bytes\": {got}, \
         \"seconds\": {secs:.3}, \"gb_per_s\": {:.3}, \"cpu_s\": {cpu:.2}, \"gb_per_cpu_s\": {:.3}, \
         \"send_cpu_s\": {send_cpu:.2}, \"recv_cpu_s\": {recv_cpu:.2}, \"gb_per_busier_cpu_s\": {:.3}, \"path_mtu\": {}, \
         \"datagrams_sent\": {}, \"datagrams_received\": {}, \"rtt_ms\": {:.1}, \"cwnd\": {}, \"lost_packets\": {}, \
         \"cc\": \"{cc}\", \"gap_ms\": {}, \"ack_threshold\": {}, \"chunks\": {chunks}}}",
        tuning.mtu_upper_bound,
        tuning.gso,
        got as f64 / secs / 1e9,
        got as f64 / cpu / 1e9,
        got as f64 / send_cpu.max(recv_cpu) / 1e9,
        stats.path.current_mtu,
        stats.udp_tx.datagrams,
        stats.udp_rx.datagrams,
        stats.path.rtt.as_secs_f64() * 1e3,
        stats.path.cwnd,
        stats.path.lost_packets,
        gap.as_millis(),
        ack_threshold.map_or(-1, i64::from),
    );
    assert_eq!(got, total, "every byte arrived");
    Ok(())
}

/// `frames` frames of `frame` bytes over one TLS-over-TCP link, each side on a thread
/// of its own, measured as the QUIC case is.
fn over_tcp(
    tls: Arc<rustls::ServerConfig>,
    cert_pem: &str,
    addr: &str,
    frame: usize,
    frames: usize,
    idle: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let bind: SocketAddr = format!("{addr}:0").parse()?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = std::thread::Builder::new().name("reader".into()).spawn(move || {
        one_thread(async move {
            let listener = tokio::net::TcpListener::bind(bind).await.expect("listen");
            addr_tx
                .send(listener.local_addr().expect("address"))
                .expect("address to the sender");
            let (tcp, remote) = listener.accept().await.expect("accept");
            let stream = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await.expect("TLS handshake");
            let conn = transport::Conn::tcp(tokio_rustls::TlsStream::Server(stream), remote, idle).expect("tcp");
            let cpu0 = thread_cpu_seconds();
            let (_send, mut recv) = conn.accept_bi().await.expect("stream");
            let mut got = 0u64;
            while let Ok((_, len)) = proto::read_head::<_, PeerMsg>(&mut recv).await {
                got += proto::read_payload(&mut recv, len).await.expect("payload").len() as u64;
            }
            let _ = done_tx.send(());
            (got, Instant::now(), thread_cpu_seconds() - cpu0)
        })
    })?;
    let server = addr_rx.recv()?;
    let access = transport::Access {
        version: PROTOCOL_VERSION,
        addresses: Vec::new(),
        tcp_addresses: vec![server.to_string()],
        cert: cert_pem.to_string(),
        token: transport::Token::generate(),
        unix: None,
        unix_host: None,
        dashboard: None,
        transport: transport::Transport::Tcp,
    };
    let payload = bytes::Bytes::from(vec![7u8; frame]);
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let sender = std::thread::Builder::new().name("sender".into()).spawn(move || {
        one_thread(async move {
            let dialed = transport::connect(&access, Duration::from_secs(10), idle).await.expect("connect");
            let cpu0 = thread_cpu_seconds();
            let (mut send, _recv) = dialed.conn.open_bi().await.expect("stream");
            let hello = PeerMsg::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Client,
                token: String::new(),
                worker: None,
            });
            for _ in 0..frames {
                send.write_frame_shared(&hello, payload.clone()).await.expect("send");
            }
            send.finish().await;
            let cpu = thread_cpu_seconds() - cpu0;
            // Closing before the reader has everything would reset the connection.
            let _ = done_rx.await;
            cpu
        })
    })?;
    let send_cpu = sender.join().map_err(|_| "the sender panicked")?;
    let (got, end, recv_cpu) = reader.join().map_err(|_| "the reader panicked")?;
    let secs = (end - t0).as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"transport\": \"tcp\", \"frame_bytes\": {frame}, \"bytes\": {got}, \"seconds\": {secs:.3}, \"gb_per_s\": {:.3}, \
         \"cpu_s\": {cpu:.2}, \"gb_per_cpu_s\": {:.3}, \"send_cpu_s\": {send_cpu:.2}, \"recv_cpu_s\": {recv_cpu:.2}, \
         \"gb_per_busier_cpu_s\": {:.3}}}",
        got as f64 / secs / 1e9,
        got as f64 / cpu / 1e9,
        got as f64 / send_cpu.max(recv_cpu) / 1e9,
    );
    assert_eq!(got, (frames * frame) as u64, "every byte arrived");
    Ok(())
}

/// Run `f` to its end on a single-threaded runtime on this thread.
fn one_thread<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
