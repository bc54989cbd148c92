//! The webrtc-rs side of the SFU: codecs, header extensions, interceptors (NACK, RTCP
//! reports, transport-cc and the bandwidth estimator) and the settings every peer connection
//! is made with.

use super::*;

/// The webrtc-rs APIs with our codecs and interceptors (NACK, RTCP reports, TWCC): one for
/// connections that carry no simulcast, one for publishers that offer it.
pub struct Sfu {
    api: API,
    api_simulcast: API,
    /// Each connection's bandwidth estimator, as its interceptor is built.
    bwe: bwe_rtc::Slot,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sfu")
    }
}

/// The H.264 profile every connection offers (constrained baseline, what OpenH264 and
/// browsers both do).
pub(super) fn h264_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: Vec::new(),
    }
}

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_string(),
        parameter: parameter.to_string(),
    }
}

impl Sfu {
    pub fn new(cfg: &SfuConfig) -> Result<Self, webrtc::Error> {
        let bwe = bwe_rtc::Slot::default();
        Ok(Sfu {
            api: Self::api(cfg, false, &bwe)?,
            api_simulcast: Self::api(cfg, true, &bwe)?,
            bwe,
        })
    }

    /// The webrtc-rs API; `simulcast`: it also takes RID-tagged layers (publishers that
    /// offer simulcast). Only then are the MID and RID header extensions registered:
    /// with them, webrtc-rs probes every packet of a stream it has not opened yet for a
    /// MID and RID, and a declared stream whose first packets beat its receiver (they do,
    /// at times, right after the handshake) is taken, found to have no RID, and closed.
    fn api(cfg: &SfuConfig, simulcast: bool, bwe: &bwe_rtc::Slot) -> Result<API, webrtc::Error> {
        let mut m = MediaEngine::default();
        m.register_codec(
            RTCRtpCodecParameters {
                capability: RTCRtpCodecCapability {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![feedback("transport-cc", "")],
                },
                payload_type: 111,
                ..Default::default()
            },
            RTPCodecType::Audio,
        )?;
        m.register_codec(
            RTCRtpCodecParameters {
                capability: RTCRtpCodecCapability {
                    rtcp_feedback: vec![
                        feedback("goog-remb", ""),
                        feedback("ccm", "fir"),
                        feedback("nack", ""),
                        feedback("nack", "pli"),
                        feedback("transport-cc", ""),
                    ],
                    ..h264_capability()
                },
                payload_type: 102,
                ..Default::default()
            },
            RTPCodecType::Video,
        )?;
        m.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RTPCodecType::Audio,
            None,
        )?;
        // Keyframes are known from frame marking, which survives end-to-end encryption of the
        // payload; simulcast layers are told apart by their RID (RFC 8852).
        let mut video_extensions = vec![crate::forward::FRAME_MARKING_URI];
        if simulcast {
            video_extensions.extend([
                webrtc::sdp::extmap::SDES_MID_URI,
                webrtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
                webrtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
            ]);
        }
        for uri in video_extensions {
            m.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                RTPCodecType::Video,
                None,
            )?;
        }
        // The estimator first (closest to the wire: it sees the transport-wide number on
        // every packet), then the transport-cc sender that numbers them, then the rest: the
        // NACK responder's retransmissions pass the sender too and get numbers of their own.
        let mut registry = Registry::new();
        registry.add(bwe_rtc::builder(bwe_rtc::Source::PerConnection(
            convo_shared::bwe::Config::default(),
            bwe.clone(),
        )));
        let registry = configure_twcc_sender_only(registry, &mut m)?;
        let registry = convo_shared::bwe::rtc::register_media_interceptors(registry, &mut m)?;
        let mut s = SettingEngine::default();
        if let Some((lo, hi)) = cfg.udp_ports {
            s.set_udp_network(UDPNetwork::Ephemeral(EphemeralUDP::new(lo, hi)?));
        }
        if let Some(ip) = &cfg.public_ip {
            let kind = if cfg.public_ip_alongside {
                RTCIceCandidateType::Srflx
            } else {
                RTCIceCandidateType::Host
            };
            s.set_nat_1to1_ips(vec![ip.clone()], kind);
        }
        // Lets participants on the server's own machine (tests, a local bot) connect.
        s.set_include_loopback_candidate(true);
        if !cfg.ice_ips.is_empty() {
            let allowed = cfg.ice_ips.clone();
            s.set_ip_filter(Box::new(move |ip| allowed.contains(&ip)));
        }
        Ok(APIBuilder::new()
            .with_media_engine(m)
            .with_interceptor_registry(registry)
            .with_setting_engine(s)
            .build())
    }

    /// A new peer connection, with the bandwidth estimator of what it sends.
    pub(super) async fn peer(
        &self,
        ice: &[IceServer],
        simulcast: bool,
    ) -> Result<(Arc<RTCPeerConnection>, Option<Bwe>), webrtc::Error> {
        let api = if simulcast {
            &self.api_simulcast
        } else {
            &self.api
        };
        let config = RTCConfiguration {
            ice_servers: ice
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
            ..Default::default()
        };
        let _creating = self.bwe.lock_creation().await;
        let pc = Arc::new(api.new_peer_connection(config).await?);
        Ok((pc, self.bwe.take()))
    }
}
