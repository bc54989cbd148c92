//! What a call sends: the published tracks (kept for the whole call, re-attached to new
//! connections after a reconnection), the offers on the `publish` connection, and the
//! microphone's Opus encoding.

use super::*;

/// RFC 6464 level of a frame: −dBov, 0 loudest, 127 silent.
pub fn audio_level(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let mean_sq = pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64;
    let rms = mean_sq.sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).clamp(0.0, 127.0) as u8
}

/// A track we publish, kept for the whole call once added: another device replaces its
/// source, a share that stops leaves it muted without one, and the publish connection is
/// renegotiated only when a kind is published for the first time.
pub(super) struct Outgoing {
    pub(super) kind: TrackKind,
    pub(super) media: OutMedia,
    pub(super) muted: Arc<AtomicBool>,
    /// The server's receivers are open for it (`publish_ready`): until then nothing is sent.
    pub(super) ready: Arc<AtomicBool>,
    /// The first publish offer that carries it.
    pub(super) offered_in: u64,
    /// Raised to stop the current source's thread; `None` while no source runs.
    pub(super) halt: Option<Arc<AtomicBool>>,
    /// Which source is the current one (a failure reported by an older one is ignored).
    pub(super) generation: u64,
}

/// What carries a published track.
pub(super) enum OutMedia {
    Audio(Arc<TrackLocalStaticSample>),
    Video(crate::video_out::VideoOut),
}

impl Outgoing {
    /// Adds a track of `kind` to `publish`; the caller offers.
    pub(super) async fn add(
        publish: &RTCPeerConnection,
        kind: TrackKind,
        participant_id: &str,
        muted: bool,
        rtt: &Arc<RoundTrip>,
        uplink: &crate::uplink::Uplink,
    ) -> Result<Outgoing, ClientError> {
        let media = match kind {
            TrackKind::Audio => {
                OutMedia::Audio(add_audio_track(publish, participant_id, rtt.clone()).await?)
            }
            TrackKind::Video | TrackKind::Screen => {
                let v = crate::video_out::VideoOut::add(publish, kind, participant_id, rtt.clone())
                    .await?;
                uplink.register(kind, v.control());
                OutMedia::Video(v)
            }
        };
        Ok(Outgoing {
            kind,
            media,
            muted: Arc::new(AtomicBool::new(muted)),
            ready: Arc::new(AtomicBool::new(false)),
            offered_in: 1,
            halt: None,
            generation: 0,
        })
    }

    /// Sends the track on a new `publish` connection (after a reconnection), from the
    /// source it has; it waits for the server's `publish_ready` again.
    pub(super) async fn attach(
        &mut self,
        publish: &RTCPeerConnection,
        rtt: &Arc<RoundTrip>,
        uplink: &crate::uplink::Uplink,
    ) -> Result<(), ClientError> {
        match &self.media {
            OutMedia::Audio(track) => attach_audio(publish, track, rtt.clone()).await?,
            OutMedia::Video(v) => {
                v.attach(publish, rtt.clone()).await?;
                uplink.register(self.kind, v.control());
            }
        }
        self.ready.store(false, Ordering::Relaxed);
        self.offered_in = 1;
        Ok(())
    }

    pub(super) fn video(&self) -> Option<&crate::video_out::VideoOut> {
        match &self.media {
            OutMedia::Video(v) => Some(v),
            OutMedia::Audio(_) => None,
        }
    }

    /// Stops the current source, if one runs.
    pub(super) fn stop(&mut self) {
        if let Some(halt) = self.halt.take() {
            halt.store(true, Ordering::Relaxed);
        }
        self.generation += 1;
    }

    /// Feeds the track from `source` instead of the current one; `ctl` hears if it stops
    /// by itself, `sig` the picture's size.
    pub(super) fn feed(
        &mut self,
        source: Source,
        ctl: mpsc::WeakUnboundedSender<Control>,
        sig: mpsc::UnboundedSender<ClientMessage>,
    ) {
        self.stop();
        let halt = Arc::new(AtomicBool::new(false));
        self.halt = Some(halt.clone());
        let (kind, generation) = (self.kind, self.generation);
        let on_end: Box<dyn FnOnce(String) + Send> = Box::new(move |why| {
            if let Some(tx) = ctl.upgrade() {
                let _ = tx.send(Control::SourceEnded(kind, generation, why));
            }
        });
        let (muted, ready) = (self.muted.clone(), self.ready.clone());
        match (&self.media, source) {
            (OutMedia::Audio(track), Source::Audio(source)) => {
                send_audio(track.clone(), source, muted, ready, halt, on_end);
            }
            (OutMedia::Video(v), Source::Video(source)) => {
                v.request_keyframe();
                v.feed(source, muted, ready, halt, sig, on_end);
            }
            _ => tracing::error!(kind = ?self.kind, "a source of the wrong kind"),
        }
    }
}

/// The published track of `kind`, added (and offered) if there is none yet.
pub(super) async fn published<'a>(
    outgoing: &'a mut Vec<Outgoing>,
    kind: TrackKind,
    muted: bool,
    offers: &mut Offers,
    sig: &Signaling,
    participant_id: &str,
) -> Result<&'a mut Outgoing, ClientError> {
    let i = match outgoing.iter().position(|o| o.kind == kind) {
        Some(i) => i,
        None => {
            let mut o = Outgoing::add(
                &offers.publish,
                kind,
                participant_id,
                muted,
                &offers.rtt,
                &offers.uplink,
            )
            .await?;
            o.offered_in = offers.next();
            outgoing.push(o);
            offers.renegotiate(sig).await?;
            outgoing.len() - 1
        }
    };
    Ok(&mut outgoing[i])
}

/// A new offer on the `publish` connection (at the start, and when a track is added).
pub(super) async fn send_offer(
    publish: &RTCPeerConnection,
    sig: &Signaling,
) -> Result<(), ClientError> {
    let offer = publish.create_offer(None).await?;
    publish.set_local_description(offer.clone()).await?;
    sig.send(ClientMessage::Offer {
        target: Transport::Publish,
        sdp: offer.sdp,
    });
    Ok(())
}

/// Offers on `publish` after the first: one at a time, the next once the last is answered.
pub(super) struct Offers {
    pub(super) publish: Arc<RTCPeerConnection>,
    /// An offer is waiting for its answer.
    pub(super) pending: bool,
    /// Tracks changed meanwhile: offer again after the answer.
    pub(super) again: bool,
    /// Where every published track's RTCP reader puts the round trip it measures.
    pub(super) rtt: Arc<RoundTrip>,
    /// The uplink's estimate and the plan that keeps the tracks within it.
    pub(super) uplink: Arc<crate::uplink::Uplink>,
    /// Offers sent, and the last one answered.
    pub(super) sent: u64,
    pub(super) answered: u64,
}

impl Offers {
    pub(super) async fn renegotiate(&mut self, sig: &Signaling) -> Result<(), ClientError> {
        if self.pending {
            self.again = true;
            return Ok(());
        }
        self.pending = true;
        self.sent += 1;
        send_offer(&self.publish, sig).await
    }

    /// The number of the first offer a track added now goes out in.
    pub(super) fn next(&self) -> u64 {
        self.sent + 1
    }

    pub(super) async fn answered(&mut self, sig: &Signaling) -> Result<(), ClientError> {
        self.pending = false;
        self.answered = self.sent;
        if std::mem::take(&mut self.again) {
            self.renegotiate(sig).await?;
        }
        Ok(())
    }
}

/// Adds the Opus track to `publish`.
pub(super) async fn add_audio_track(
    publish: &RTCPeerConnection,
    participant_id: &str,
    rtt: Arc<RoundTrip>,
) -> Result<Arc<TrackLocalStaticSample>, ClientError> {
    let track = Arc::new(TrackLocalStaticSample::new(
        RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            ..Default::default()
        },
        "audio".to_owned(),
        participant_id.to_owned(),
    ));
    attach_audio(publish, &track, rtt).await?;
    Ok(track)
}

/// Sends the Opus track on `publish`.
pub(super) async fn attach_audio(
    publish: &RTCPeerConnection,
    track: &Arc<TrackLocalStaticSample>,
    rtt: Arc<RoundTrip>,
) -> Result<(), ClientError> {
    let sender = publish
        .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
        .await?;
    // The server's receiver reports tell the round trip.
    tokio::spawn(async move {
        while let Ok((packets, _)) = sender.read_rtcp().await {
            rtt.observe(&packets, std::time::SystemTime::now());
        }
    });
    Ok(())
}

/// Opus-encodes the source's 20 ms frames on a thread of its own (sources block until their
/// next frame is captured) and hands them, with their RFC 6464 level, to an async writer,
/// until `stop` is raised. `on_end` hears why, if the source stops by itself.
pub(super) fn send_audio(
    track: Arc<TrackLocalStaticSample>,
    mut source: Box<dyn AudioSource>,
    muted: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    on_end: Box<dyn FnOnce(String) + Send>,
) {
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, u8)>(16);
    std::thread::spawn(move || {
        let Ok(mut enc) = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
        else {
            tracing::error!("Opus encoder unavailable");
            return;
        };
        // Each packet also carries the one before at a lower rate (in-band FEC): a receiver
        // rebuilds a lost packet from the next one.
        let _ = enc.set_inband_fec(true);
        let _ = enc.set_packet_loss_perc(OPUS_EXPECTED_LOSS_PERCENT);
        let mut buf = vec![0u8; 4000];
        while !stop.load(Ordering::Relaxed) {
            let pcm = match source.read() {
                Ok(pcm) => pcm,
                Err(e) => {
                    tracing::warn!(error = %e, "microphone stopped");
                    if !stop.load(Ordering::Relaxed) {
                        on_end(e.to_string());
                    }
                    return;
                }
            };
            // Replaced while it waited for the frame: the next source's frames follow. Nothing
            // is encoded before the server can receive it.
            if muted.load(Ordering::Relaxed)
                || stop.load(Ordering::Relaxed)
                || !ready.load(Ordering::Relaxed)
            {
                continue;
            }
            let Ok(len) = enc.encode(&pcm, &mut buf) else {
                continue;
            };
            if tx
                .blocking_send((buf[..len].to_vec(), audio_level(&pcm)))
                .is_err()
            {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((data, level)) = rx.recv().await {
            let sample = Sample {
                data: Bytes::from(data),
                duration: Duration::from_millis(20),
                ..Default::default()
            };
            let level = HeaderExtension::AudioLevel(AudioLevelExtension {
                level,
                voice: level < 127,
            });
            // A failed write (a connection closing under a reconnection) loses that frame
            // only; the feed ends when it is stopped.
            if let Err(e) = track.write_sample_with_extensions(&sample, &[level]).await {
                tracing::debug!(error = %e, "an audio frame was not sent");
            }
        }
    });
}

/// The loss rate Opus's encoder is told to expect: with more than 0 it puts in-band FEC in
/// its packets.
pub(super) const OPUS_EXPECTED_LOSS_PERCENT: i32 = 10;
