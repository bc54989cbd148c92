//! What a call receives: each remote track put back in order (jitter buffer), decoded
//! (Opus with in-band FEC, H.264) and measured.

use super::*;

/// How long a gap may hold up the packets after it (a NACK retransmission on a good network
/// takes one round trip), and how many packets the buffer holds at most.
pub(super) const AUDIO_JITTER: (Duration, usize) = (Duration::from_millis(60), 50);
pub(super) const VIDEO_JITTER: (Duration, usize) = (Duration::from_millis(150), 600);

/// The RTP packets of a track in sequence order, through a jitter buffer; `None` when the
/// track has ended and everything held has been released.
pub(super) struct Ordered {
    pub(super) track: Arc<TrackRemote>,
    pub(super) jb: JitterBuffer<webrtc::rtp::packet::Packet>,
    pub(super) ended: bool,
    pub(super) stats: Stats,
    pub(super) track_id: String,
    pub(super) joined_at: Instant,
    pub(super) clock_rate: u32,
    /// The track's counts before a reconnection gave it a new receiver.
    pub(super) before: crate::jitter::JitterStats,
}

impl Ordered {
    /// The jitter buffer's counters into the track's stats as they change, so that a report
    /// taken while the track is still being read has them (not only once it has ended).
    pub(super) fn publish_stats(&self) {
        if let Some(t) = lock(&self.stats).get_mut(&self.track_id) {
            t.jitter = self.before.plus(self.jb.stats);
        }
    }

    pub(super) async fn next(&mut self) -> Option<Released<webrtc::rtp::packet::Packet>> {
        loop {
            if let Some(r) = self.jb.pop(Instant::now()) {
                if matches!(r, Released::Lost(_)) {
                    self.publish_stats();
                }
                return Some(r);
            }
            if self.ended {
                // Release what is left, gaps and all.
                return self.jb.pop(Instant::now() + Duration::from_secs(3600));
            }
            let read = self.track.read_rtp();
            let got = match self.jb.deadline() {
                Some(d) => match tokio::time::timeout_at(d.into(), read).await {
                    Ok(r) => r,
                    Err(_) => continue,
                },
                None => read.await,
            };
            match got {
                Ok((packet, _)) => {
                    let at_ms = self.joined_at.elapsed().as_millis() as u64;
                    let (len, ts) = (packet.payload.len(), packet.header.timestamp);
                    self.jb
                        .push(packet.header.sequence_number, Instant::now(), packet);
                    if let Some(t) = lock(&self.stats).get_mut(&self.track_id) {
                        t.packet(at_ms, len, ts, self.clock_rate);
                        t.jitter = self.before.plus(self.jb.stats);
                    }
                }
                Err(_) => self.ended = true,
            }
        }
    }
}

/// Whether an Annex-B access unit holds an IDR picture (decodable on its own).
pub(crate) fn has_idr(annex_b: &[u8]) -> bool {
    has_nal(annex_b, 5)
}

/// Whether an Annex B access unit holds a NAL unit of type `t`.
fn has_nal(annex_b: &[u8], t: u8) -> bool {
    annex_b
        .windows(4)
        .any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x1F == t)
}

/// Whether a decoder can start from this access unit: an IDR with its parameter sets (an IDR
/// whose SPS/PPS packet was lost decodes to nothing, and so does everything after it).
fn starts_decoding(annex_b: &[u8]) -> bool {
    has_nal(annex_b, 5) && has_nal(annex_b, 7) && has_nal(annex_b, 8)
}

/// Receives one remote track until it ends: orders its packets, conceals or skips what was
/// lost, decodes, checks the content, and hands the media to the backend's sink.
pub(super) async fn receive(
    track: Arc<TrackRemote>,
    stats: Stats,
    joined_at: Instant,
    pc: std::sync::Weak<RTCPeerConnection>,
    backend: Arc<dyn MediaBackend>,
) {
    let participant = track.stream_id();
    let track_id = track.id();
    let kind = kind_of(&track);
    // A track that comes back after a reconnection goes on with its figures (the gap counts
    // as a freeze).
    let resumed = {
        let mut all = lock(&stats);
        let t = all
            .entry(track_id.clone())
            .or_insert_with(|| TrackStats::new(&participant, &track_id, kind.as_str()));
        t.ended = false;
        t.jitter
    };
    let remote = RemoteTrack {
        participant_id: participant.clone(),
        track_id: track_id.clone(),
        kind,
    };
    let since_join = move || joined_at.elapsed().as_millis() as u64;
    let (wait, capacity) = if kind == TrackKind::Audio {
        AUDIO_JITTER
    } else {
        VIDEO_JITTER
    };
    let mut ordered = Ordered {
        track: track.clone(),
        jb: JitterBuffer::new(wait, capacity),
        ended: false,
        stats: stats.clone(),
        track_id: track_id.clone(),
        joined_at,
        clock_rate: track.codec().capability.clock_rate,
        before: resumed,
    };
    if kind == TrackKind::Audio {
        let sink = backend.audio_sink(&remote);
        receive_audio(&mut ordered, sink, since_join).await;
    } else {
        let sink = backend.video_sink(&remote);
        receive_video(&mut ordered, sink, since_join, pc).await;
    }
    ordered.publish_stats();
    if let Some(t) = lock(&stats).get_mut(&track_id) {
        t.ended = true;
    }
}

/// How an audio frame was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Made {
    Decoded,
    /// From the next packet's in-band FEC.
    Recovered,
    /// Packet loss concealment.
    Concealed,
}

/// Whether an Opus packet has a SILK part (SILK-only or hybrid: TOC configurations 0–15),
/// the part that carries in-band FEC.
pub(super) fn opus_has_silk(packet: &[u8]) -> bool {
    packet.first().is_some_and(|toc| toc >> 3 < 16)
}

pub(super) async fn receive_audio(
    ordered: &mut Ordered,
    mut sink: Option<Box<dyn AudioSink>>,
    since_join: impl Fn() -> u64,
) {
    let Ok(mut dec) = opus::Decoder::new(48_000, opus::Channels::Mono) else {
        return;
    };
    let mut pcm = vec![0i16; 5760];
    let mut pitch_meter = synth::PitchMeter::default();
    let mut markers = MarkerDetector::default();
    // Packets given up on, waiting for the next one: its in-band FEC may carry the last.
    let mut lost = 0u64;
    while let Some(released) = ordered.next().await {
        let p = match released {
            Released::Lost(k) => {
                lost += k;
                continue;
            }
            Released::Packet(p) => p,
        };
        // (frame, how it was made)
        let mut frames: Vec<(Vec<i16>, Made)> = Vec::new();
        if lost > 0 {
            // Up to 100 ms is concealed (longer gaps are silence to the sink); the last lost
            // frame comes from this packet's FEC when it has SILK in it (the mode that carries
            // FEC), else it is concealed too.
            let k = std::mem::take(&mut lost).min(5);
            for i in 0..k {
                let fec = i == k - 1 && opus_has_silk(&p.payload);
                // Empty input (or FEC that is not there): concealment as long as the buffer.
                let input: &[u8] = if fec { &p.payload } else { &[] };
                if let Ok(n) = dec.decode(input, &mut pcm[..AUDIO_FRAME], fec) {
                    let made = if fec {
                        Made::Recovered
                    } else {
                        Made::Concealed
                    };
                    frames.push((pcm[..n].to_vec(), made));
                }
            }
        }
        match dec.decode(&p.payload, &mut pcm, false) {
            Ok(n) => frames.push((pcm[..n].to_vec(), Made::Decoded)),
            Err(_) if frames.is_empty() => continue,
            Err(_) => {}
        }
        for (frame, made) in frames {
            let concealed = made == Made::Concealed;
            if let Some(sink) = sink.as_mut() {
                sink.play(&frame);
            }
            let onset = markers.feed(&frame);
            // The pitch of the tone, markers left out.
            let pitch = if MarkerDetector::is_marker(&frame) || concealed {
                pitch_meter.gap();
                None
            } else {
                pitch_meter.feed(&frame)
            };
            let now_ms = synth::now_ms64();
            let mut s = lock(&ordered.stats);
            if let Some(t) = s.get_mut(&ordered.track_id) {
                match made {
                    Made::Concealed => t.concealed_frames += 1,
                    Made::Recovered => {
                        t.recovered_frames += 1;
                        t.audio_frame(since_join(), pitch);
                    }
                    Made::Decoded => t.audio_frame(since_join(), pitch),
                }
                if onset {
                    t.audio_marker(now_ms, synth::marker_latency_ms(now_ms));
                }
            }
        }
    }
}

pub(super) async fn receive_video(
    ordered: &mut Ordered,
    mut sink: Option<Box<dyn VideoSink>>,
    since_join: impl Fn() -> u64 + Send + 'static,
    pc: std::sync::Weak<RTCPeerConnection>,
) {
    // Until a keyframe arrives (at the start, after a loss the jitter buffer gave up on, and
    // after a frame the decoder could not decode), ask for one every half second; frames that
    // depend on what was lost are not decoded.
    let need_keyframe = Arc::new(AtomicBool::new(true));
    // Decoding on a thread of its own (the decoder is not `Send`).
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (stats, tid) = (ordered.stats.clone(), ordered.track_id.clone());
    let undecodable = need_keyframe.clone();
    std::thread::spawn(move || {
        let Ok(mut dec) = openh264::decoder::Decoder::new() else {
            return;
        };
        while let Ok(frame) = rx.recv() {
            let yuv = match dec.decode(&frame) {
                Ok(Some(yuv)) => yuv,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "frame not decoded");
                    undecodable.store(true, Ordering::Relaxed);
                    continue;
                }
            };
            let (w, h) = yuv.dimensions();
            let code = synth::read_code(yuv.y(), yuv.strides().0, w, h);
            let latency = code.map(|c| synth::elapsed_ms(c.capture_ms, synth::now_ms32()));
            if let Some(t) = lock(&stats).get_mut(&tid) {
                t.video_frame(code, since_join(), latency, (w as u32, h as u32));
            }
            if let Some(sink) = sink.as_mut() {
                sink.frame(&DecodedVideo {
                    width: w,
                    height: h,
                    y: yuv.y(),
                    u: yuv.u(),
                    v: yuv.v(),
                    strides: yuv.strides(),
                });
            }
        }
    });
    let media_ssrc = ordered.track.ssrc();
    let (want, done) = (need_keyframe.clone(), Arc::new(AtomicBool::new(false)));
    let done2 = done.clone();
    tokio::spawn(async move {
        while !done2.load(Ordering::Relaxed) {
            if want.load(Ordering::Relaxed) {
                let Some(pc) = pc.upgrade() else { return };
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if pc.write_rtcp(&[Box::new(pli)]).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut depacketizer = H264Packet::default();
    let mut frame = BytesMut::new();
    while let Some(released) = ordered.next().await {
        let packet = match released {
            Released::Packet(p) => p,
            Released::Lost(_) => {
                frame.clear();
                // The depacketizer may hold part of a fragmented NAL unit; it would glue the
                // next fragments to it (it does not look at the start bit).
                depacketizer = H264Packet::default();
                need_keyframe.store(true, Ordering::Relaxed);
                continue;
            }
        };
        if let Ok(nals) = depacketizer.depacketize(&packet.payload) {
            frame.extend_from_slice(&nals);
        }
        if packet.header.marker && !frame.is_empty() {
            let unit = frame.split();
            if need_keyframe.load(Ordering::Relaxed) {
                if !starts_decoding(&unit) {
                    if let Some(t) = lock(&ordered.stats).get_mut(&ordered.track_id) {
                        t.frames_skipped += 1;
                    }
                    continue;
                }
                need_keyframe.store(false, Ordering::Relaxed);
            }
            let _ = tx.send(unit.to_vec());
        }
    }
    done.store(true, Ordering::Relaxed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_an_idr_with_its_parameter_sets_restarts_decoding() {
        let nal = |t: u8| [0u8, 0, 0, 1, 0x60 | t, 0xAA];
        let unit = |types: &[u8]| types.iter().flat_map(|&t| nal(t)).collect::<Vec<u8>>();
        assert!(starts_decoding(&unit(&[7, 8, 5])));
        // The STAP-A with SPS and PPS was lost: the IDR's slices alone decode to nothing.
        assert!(has_idr(&unit(&[5, 5])) && !starts_decoding(&unit(&[5, 5])));
        assert!(!starts_decoding(&unit(&[7, 8, 1])));
    }

    /// Mean squared difference of two frames.
    pub(super) fn error(a: &[i16], b: &[i16]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    pub(super) fn a_lost_voice_packet_is_rebuilt_from_the_next_ones_fec() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_inband_fec(true).unwrap();
        enc.set_packet_loss_perc(OPUS_EXPECTED_LOSS_PERCENT)
            .unwrap();
        let frames: Vec<Vec<i16>> = (0..40u32)
            .map(|i| synth::tone(300.0 + f64::from(i) * 5.0, u64::from(i) * 960, AUDIO_FRAME))
            .collect();
        let mut buf = vec![0u8; 4000];
        let packets: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let n = enc.encode(f, &mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect();
        assert!(
            packets.iter().all(|p| opus_has_silk(p)),
            "voice mode carries FEC"
        );
        // Packet 30: received, lost and rebuilt from packet 31's FEC, lost and concealed.
        let run = |how: Option<bool>| {
            let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
            let mut pcm = vec![0i16; AUDIO_FRAME];
            for p in &packets[..30] {
                dec.decode(p, &mut pcm, false).unwrap();
            }
            match how {
                None => dec.decode(&packets[30], &mut pcm, false),
                Some(true) => dec.decode(&packets[31], &mut pcm, true),
                Some(false) => dec.decode(&[], &mut pcm, false),
            }
            .unwrap();
            pcm
        };
        let received = run(None);
        let (e_fec, e_plc) = (
            error(&run(Some(true)), &received),
            error(&run(Some(false)), &received),
        );
        assert!(
            e_fec * 4.0 < e_plc,
            "FEC error {e_fec:.0}, concealment error {e_plc:.0}"
        );
    }

    #[test]
    pub(super) fn silk_is_told_from_the_table_of_contents() {
        assert!(opus_has_silk(&[0x08 << 3]));
        assert!(opus_has_silk(&[15 << 3]));
        assert!(!opus_has_silk(&[16 << 3]));
        assert!(!opus_has_silk(&[]));
    }
}
