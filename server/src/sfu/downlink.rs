//! A subscriber's downlink: the bandwidth estimate of its `subscribe` connection (from the
//! transport-cc feedback its client sends) and the probing that finds out whether more fits.
//! The room shares the estimate among the subscriber's tracks ([`crate::allocate`]) on every
//! plan.

use std::time::Instant;

use convo_shared::bwe::rtc::{Bwe, start_probing};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;

pub struct Downlink {
    bwe: Bwe,
    pacer: tokio::task::JoinHandle<()>,
}

impl Drop for Downlink {
    fn drop(&mut self) {
        self.pacer.abort();
    }
}

impl Downlink {
    /// Adds the probe track to `pc` (it goes out with the next offer) and starts pacing.
    pub async fn start(
        pc: &RTCPeerConnection,
        bwe: Bwe,
        codec: RTCRtpCodecCapability,
    ) -> Result<Downlink, webrtc::Error> {
        let pacer = start_probing(pc, bwe.clone(), codec).await?;
        Ok(Downlink { bwe, pacer })
    }

    /// The estimate (bps); `None` when the subscriber sends no feedback at all.
    pub fn budget(&self, now: Instant) -> Option<u64> {
        self.bwe.lock().budget(now)
    }

    /// The subscriber's reports arrive and the estimate rests on them (see
    /// [`convo_shared::bwe::SendSideBwe::is_measured`]).
    pub fn is_measured(&self, now: Instant) -> bool {
        let bwe = self.bwe.lock();
        bwe.is_live(now) && bwe.is_measured()
    }

    pub fn summary(&self, now: Instant) -> String {
        self.bwe.lock().summary(now)
    }

    /// What the subscriber's tracks would cost in full (probes aim for it).
    pub fn set_wanted(&self, bps: u64) {
        self.bwe.lock().set_wanted(bps);
    }
}
