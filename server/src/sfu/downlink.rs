//! A subscriber's downlink: the bandwidth estimate of its `subscribe` connection (from the
//! transport-cc feedback its client sends), the probe track that carries probe padding, and
//! the pacer that sends it. The room shares the estimate among the subscriber's tracks
//! ([`crate::allocate`]) on every plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use convo_shared::bwe::rtc::{Bwe, PROBE_TRACK_ID, ProbeSender};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

/// While a probe runs, padding goes out this often; otherwise the pacer looks this often
/// whether one should start.
const PROBE_TICK: Duration = Duration::from_millis(5);
const IDLE_TICK: Duration = Duration::from_millis(100);

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
        let track = Arc::new(TrackLocalStaticRTP::new(
            codec,
            PROBE_TRACK_ID.to_string(),
            PROBE_TRACK_ID.to_string(),
        ));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
            .await?;
        // Its RTCP is read (the transport-cc feedback may name its SSRC).
        tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
        let pacer = {
            let bwe = bwe.clone();
            tokio::spawn(async move {
                let mut probe = ProbeSender::new();
                loop {
                    let bytes = bwe.lock().padding(Instant::now());
                    if bytes > 0 {
                        for p in probe.packets(bytes) {
                            if let Err(e) = track.write_rtp(&p).await {
                                tracing::debug!(error = %e, "probe padding not sent");
                                break;
                            }
                        }
                    }
                    let probing = bwe.lock().probing(Instant::now());
                    tokio::time::sleep(if probing { PROBE_TICK } else { IDLE_TICK }).await;
                }
            })
        };
        Ok(Downlink { bwe, pacer })
    }

    /// The estimate (bps) when the subscriber's feedback is live.
    pub fn budget(&self, now: Instant) -> Option<u64> {
        let b = self.bwe.lock();
        b.is_live(now).then(|| b.target())
    }

    /// What the subscriber's tracks would cost in full (probes aim for it).
    pub fn set_wanted(&self, bps: u64) {
        self.bwe.lock().set_wanted(bps);
    }
}
