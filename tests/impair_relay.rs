//! `impair-relay`: the network bed's user-space impairment (this kernel has no `netem`). A
//! UDP forwarder that stands where the server's media address is announced: what a client
//! sends to `<listen>:<port>` goes to `<server>:<port>` from a socket of the relay's own per
//! client (as a NAT would), and the answers come back; each packet, both ways, is dropped with
//! a probability, or delayed by a base delay plus a uniform jitter (so packets reorder when the
//! jitter exceeds their spacing). Seeded: the same seed gives every packet the same fate.
//!
//! `impair-relay --listen 10.99.4.1 --server 10.99.3.1 --ports 40000-40199 --delay-ms 40
//! --jitter-ms 20 --loss 0.05 --seed 7`

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

/// Clients a port forwards for at most (each gets a socket of its own toward the server).
const MAX_CLIENTS_PER_PORT: usize = 16;

#[derive(Parser, Debug)]
struct Cli {
    /// The address clients send to (the server's media address as announced).
    #[arg(long)]
    listen: IpAddr,
    /// The server's address the media ports are on.
    #[arg(long)]
    server: IpAddr,
    /// The UDP ports forwarded, e.g. 40000-40199 (the server's `CONVO_UDP_PORTS`).
    #[arg(long)]
    ports: String,
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Added to the delay: uniform in ±this.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability of dropping a packet, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Each packet's fate: dropped, or delayed by how long.
#[derive(Debug)]
struct Impairment {
    rng: StdRng,
    loss: f64,
    delay: Duration,
    jitter: Duration,
}

impl Impairment {
    fn new(seed: u64, loss: f64, delay: Duration, jitter: Duration) -> Impairment {
        Impairment {
            rng: StdRng::seed_from_u64(seed),
            loss: loss.clamp(0.0, 1.0),
            delay,
            jitter: jitter.min(delay),
        }
    }

    /// `None`: dropped.
    fn fate(&mut self) -> Option<Duration> {
        if self.rng.random::<f64>() < self.loss {
            return None;
        }
        let j = self.jitter.as_secs_f64();
        let offset = if j > 0.0 {
            self.rng.random_range(-j..=j)
        } else {
            0.0
        };
        Some(Duration::from_secs_f64(
            (self.delay.as_secs_f64() + offset).max(0.0),
        ))
    }
}

type Shared = Arc<Mutex<Impairment>>;

fn fate(imp: &Shared) -> Option<Duration> {
    imp.lock().unwrap_or_else(PoisonError::into_inner).fate()
}

/// Sends `data` to `to` on `socket` after its fate's delay (or never).
fn later(imp: &Shared, socket: Arc<UdpSocket>, data: Vec<u8>, to: SocketAddr) {
    let Some(delay) = fate(imp) else { return };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = socket.send_to(&data, to).await;
    });
}

async fn forward_port(listen: SocketAddr, server: SocketAddr, imp: Shared) -> std::io::Result<()> {
    let front = Arc::new(UdpSocket::bind(listen).await?);
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = front.recv_from(&mut buf).await?;
        let up = match upstream.get(&client) {
            Some(up) => up.clone(),
            None => {
                if upstream.len() >= MAX_CLIENTS_PER_PORT {
                    continue;
                }
                let up = Arc::new(UdpSocket::bind(SocketAddr::new(unspecified(server), 0)).await?);
                upstream.insert(client, up.clone());
                // The server's answers to this client, back through the front socket.
                let (up2, front2, imp2) = (up.clone(), front.clone(), imp.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok((n, from)) = up2.recv_from(&mut buf).await {
                        if from == server {
                            later(&imp2, front2.clone(), buf[..n].to_vec(), client);
                        }
                    }
                });
                up
            }
        };
        later(&imp, up, buf[..n].to_vec(), server);
    }
}

fn unspecified(like: SocketAddr) -> IpAddr {
    match like {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (lo, hi) = cli
        .ports
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .filter(|(a, b)| a <= b)
        .ok_or_else(|| anyhow::anyhow!("--ports wants a range like 40000-40199"))?;
    let imp: Shared = Arc::new(Mutex::new(Impairment::new(
        cli.seed,
        cli.loss,
        Duration::from_millis(cli.delay_ms),
        Duration::from_millis(cli.jitter_ms),
    )));
    let mut tasks = Vec::new();
    for port in lo..=hi {
        let (listen, server) = (
            SocketAddr::new(cli.listen, port),
            SocketAddr::new(cli.server, port),
        );
        tasks.push(tokio::spawn(forward_port(listen, server, imp.clone())));
    }
    eprintln!("impair-relay: forwarding {} ports", tasks.len());
    for t in tasks {
        t.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_follow_the_settings_and_the_seed() {
        let mut a = Impairment::new(
            7,
            0.05,
            Duration::from_millis(40),
            Duration::from_millis(20),
        );
        let fates: Vec<Option<Duration>> = (0..20_000).map(|_| a.fate()).collect();
        let dropped = fates.iter().filter(|f| f.is_none()).count() as f64 / 20_000.0;
        assert!((0.04..0.06).contains(&dropped), "dropped {dropped}");
        let delays: Vec<f64> = fates.iter().flatten().map(|d| d.as_secs_f64()).collect();
        let min = delays.iter().copied().fold(f64::MAX, f64::min);
        let max = delays.iter().copied().fold(0.0, f64::max);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!(min >= 0.020 && max <= 0.060, "{min}..{max}");
        assert!((0.039..0.041).contains(&mean), "mean {mean}");
        // The same seed, the same fates.
        let mut b = Impairment::new(
            7,
            0.05,
            Duration::from_millis(40),
            Duration::from_millis(20),
        );
        assert!(fates.iter().all(|f| *f == b.fate()));
    }
}
