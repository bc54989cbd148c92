//! WHEP viewers of a room: one receive-only peer connection each, showing one participant
//! or following the active speaker, through down-tracks of their own.

use super::*;

impl RoomMedia {
    /// Whom a viewer that follows the speaker shows: the active speaker, else anyone who
    /// publishes.
    pub(super) fn speaker_or_publisher(&self) -> Option<String> {
        self.speaker.current().map(str::to_string).or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| !p.published.is_empty())
                .map(|(id, _)| id.clone())
        })
    }

    /// A participant's audio and camera.
    fn av_tracks(&self, pid: &str) -> (Option<Arc<fanout::Fanout>>, Option<Arc<fanout::Fanout>>) {
        let Some(p) = self.peers.get(pid) else {
            return (None, None);
        };
        let of = |kind: TrackKind| {
            p.published
                .values()
                .find(|t| t.info.kind == kind)
                .map(|t| t.fan.clone())
        };
        (of(TrackKind::Audio), of(TrackKind::Video))
    }

    /// WHEP: a viewer of one participant (`pinned`) or of whoever is speaking, following the
    /// active speaker as it changes. Answers with every candidate in the SDP.
    pub async fn whep_offer(
        &mut self,
        viewer_id: &str,
        pinned: Option<String>,
        view: Option<crate::forward::ViewSize>,
        sdp: String,
    ) -> Result<String, ViewError> {
        let nothing = |m: &str| ViewError::NothingToWatch(m.to_string());
        let target = match &pinned {
            Some(p) if self.peers.contains_key(p) => p.clone(),
            Some(_) => return Err(nothing("No such participant in the room.")),
            None => self
                .speaker_or_publisher()
                .ok_or_else(|| nothing("Nobody in the room is publishing yet."))?,
        };
        let (audio, camera) = self.av_tracks(&target);
        if audio.is_none() && camera.is_none() {
            return Err(nothing("That participant publishes no audio or video."));
        }
        let refused = |e: webrtc::Error| ViewError::Refused(e.to_string());
        let (pc, _) = self.sfu.peer(&self.ice, false).await.map_err(refused)?;
        // Tracks first: the offer's receive-only m-lines then take them as they are matched.
        let viewer = Viewer {
            pc: pc.clone(),
            pinned,
            showing: target.clone(),
            carries: (audio.is_some(), camera.is_some()),
        };
        let added = async {
            if let Some(a) = &audio {
                let local = a.attach_ready(viewer_id);
                pc.add_track(local as Arc<dyn TrackLocal + Send + Sync>)
                    .await?;
            }
            if let Some(v) = &camera {
                let local = v.attach_ready(viewer_id);
                if let Some(view) = view {
                    // Moves with the down-track when a speaker-following viewer switches.
                    v.set_view(viewer_id, view);
                }
                let sender = pc
                    .add_track(local as Arc<dyn TrackLocal + Send + Sync>)
                    .await?;
                let events = self.events.clone();
                let (reader, vid) = (sender.clone(), viewer_id.to_string());
                tokio::spawn(async move {
                    while let Ok((packets, _)) = reader.read_rtcp().await {
                        if packets.iter().any(|p| {
                            p.as_any().is::<PictureLossIndication>()
                                || p.as_any().is::<FullIntraRequest>()
                        }) {
                            events(MediaEvent::ViewerWantsKeyframe {
                                viewer_id: vid.clone(),
                            });
                        }
                    }
                });
            }
            pc.set_remote_description(RTCSessionDescription::offer(unify_bundle(&sdp))?)
                .await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            Ok::<_, webrtc::Error>(())
        }
        .await;
        if let Err(e) = added {
            for fan in [&audio, &camera].into_iter().flatten() {
                fan.detach(viewer_id);
            }
            let _ = pc.close().await;
            return Err(refused(e));
        }
        self.viewers.insert(viewer_id.to_string(), viewer);
        // A keyframe as soon as the viewer can receive it (one sent before its connection is up
        // is lost, and not every stack asks for another), and once more in case the first
        // request fell inside the publisher's rate limit.
        let (events, vid) = (self.events.clone(), viewer_id.to_string());
        pc.on_peer_connection_state_change(Box::new(move |s| {
            use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState as S;
            let (events, vid) = (events.clone(), vid.clone());
            match s {
                S::Connected => {
                    tokio::spawn(async move {
                        for wait in [0, KEYFRAME_INTERVAL.as_millis() as u64 + 100] {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            events(MediaEvent::ViewerWantsKeyframe {
                                viewer_id: vid.clone(),
                            });
                        }
                    });
                }
                S::Failed | S::Closed => events(MediaEvent::ViewerGone { viewer_id: vid }),
                _ => {}
            }
            Box::pin(async {})
        }));
        complete_sdp(&pc).await.map_err(ViewError::Refused)
    }

    /// Viewers that follow the speaker switch to `speaker`'s tracks: their down-tracks move
    /// to the new speaker's, and continue at its next packet (audio) or keyframe (camera,
    /// asked for at once).
    pub(super) async fn follow_speaker(&mut self, speaker: &str) {
        let (audio, camera) = self.av_tracks(speaker);
        if audio.is_none() && camera.is_none() {
            return;
        }
        let moving: Vec<(String, String)> = self
            .viewers
            .iter()
            .filter(|(_, v)| v.pinned.is_none() && v.showing != speaker)
            .map(|(id, v)| (id.clone(), v.showing.clone()))
            .collect();
        for (viewer_id, before) in &moving {
            let (old_audio, old_camera) = self.av_tracks(before);
            let Some(v) = self.viewers.get_mut(viewer_id) else {
                continue;
            };
            v.showing = speaker.to_string();
            for (carried, old, new) in [
                (v.carries.0, &old_audio, &audio),
                (v.carries.1, &old_camera, &camera),
            ] {
                if carried
                    && let (Some(old), Some(new)) = (old, new)
                    && let Some(down) = old.detach(viewer_id)
                {
                    new.insert(viewer_id, down);
                }
            }
        }
        for (viewer_id, _) in &moving {
            self.viewer_wants_keyframe(viewer_id).await;
        }
    }

    /// A viewer's keyframe request, for whoever it shows.
    pub async fn viewer_wants_keyframe(&mut self, viewer_id: &str) {
        if let Some(target) = self.viewers.get(viewer_id).map(|v| v.showing.clone()) {
            self.keyframe_wanted(&format!("{target}:video"), viewer_id)
                .await;
        }
    }

    /// A viewer whose connection is gone.
    pub async fn viewer_gone(&mut self, viewer_id: &str) {
        if let Some(v) = self.viewers.remove(viewer_id) {
            let (audio, camera) = self.av_tracks(&v.showing);
            for fan in [audio, camera].into_iter().flatten() {
                fan.detach(viewer_id);
            }
            let _ = v.pc.close().await;
        }
    }
}
