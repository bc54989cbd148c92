//! Notices when a local address goes away (Wi-Fi off, cable out, a VPN or a namespace
//! renumbered), so that a call reconnects at once instead of waiting for ICE to time out.
//! Polls the interfaces' addresses (cheap: one `getifaddrs`) every [`EVERY`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;

pub const EVERY: Duration = Duration::from_millis(200);

/// The machine's addresses a call may use: not loopback, and among `allowed` if it is not
/// empty.
pub fn addresses(allowed: &[IpAddr]) -> BTreeSet<IpAddr> {
    webrtc::util::ifaces::ifaces()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| !ip.is_loopback() && (allowed.is_empty() || allowed.contains(ip)))
        .collect()
}

/// Sends `()` on `lost` each time an address seen before is gone; ends when `lost` closes.
pub fn watch(allowed: Vec<IpAddr>, lost: mpsc::UnboundedSender<()>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut known = addresses(&allowed);
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if lost.is_closed() {
                break;
            }
            let now = addresses(&allowed);
            if known.iter().any(|ip| !now.contains(ip)) {
                tracing::info!(before = ?known, after = ?now, "a local address is gone");
                let _ = lost.send(());
            }
            known = now;
        }
    })
}
