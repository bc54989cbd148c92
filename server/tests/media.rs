//! Real media through the SFU: webrtc-rs peers publish Opus-encoded tones over the signaling
//! WebSocket; every other participant receives, decodes and recognises them. On SQLite and on
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::ws::Client;
use common::{Backend, PASSWORD, Session, SmtpSink, TestEnv, TestServer, reset_token};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;

on_both_databases!(
    three_participants_hear_each_other,
    whep_viewers_are_admitted_like_joiners,
    live_connections_end_with_their_session,
    a_connection_outliving_its_token_is_checked_again,
);

const RATE: u32 = 48_000;
const FRAME: usize = 960; // 20 ms

fn api() -> API {
    let mut m = MediaEngine::default();
    m.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut m).unwrap();
    let mut s = SettingEngine::default();
    s.set_include_loopback_candidate(true);
    APIBuilder::new()
        .with_media_engine(m)
        .with_interceptor_registry(registry)
        .with_setting_engine(s)
        .build()
}

/// What a participant's client saw of one remote track.
#[derive(Debug, Default, Clone)]
struct Heard {
    packets: usize,
    /// Dominant frequency of the decoded audio, from zero crossings.
    hz: f64,
    /// RTCP sender reports received for the track (for lip sync).
    sender_reports: usize,
    ended: bool,
}

/// A participant: signaling socket, `publish` and `subscribe` peer connections, a tone source,
/// and decoders for everything it receives.
struct Participant {
    out: mpsc::UnboundedSender<Value>,
    events: mpsc::UnboundedReceiver<Value>,
    heard: Arc<Mutex<HashMap<String, Heard>>>,
    heard_tx: mpsc::UnboundedSender<()>,
    heard_rx: mpsc::UnboundedReceiver<()>,
    participant_id: String,
    /// The `joined` message: who was already there, with their tracks.
    joined: Value,
}

impl Participant {
    async fn join(srv: &TestServer, s: &Session, room: &str, tone_hz: Option<f64>) -> Participant {
        let mut client = Client::connect(srv, s).await;
        let joined = client.join(room).await;
        let participant_id = joined["participant_id"].as_str().unwrap().to_string();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Value>();
        let (heard_tx, heard_rx) = mpsc::unbounded_channel::<()>();
        let heard: Arc<Mutex<HashMap<String, Heard>>> = Arc::default();
        let api = Arc::new(api());

        let publish = Arc::new(
            api.new_peer_connection(RTCConfiguration::default())
                .await
                .unwrap(),
        );
        watch_candidates(&publish, "publish", out_tx.clone());
        if let Some(hz) = tone_hz {
            let track = Arc::new(TrackLocalStaticSample::new(
                RTCRtpCodecCapability {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: RATE,
                    channels: 2,
                    ..Default::default()
                },
                "audio".to_owned(),
                "local".to_owned(),
            ));
            publish
                .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .unwrap();
            tokio::spawn(play_tone(track, hz));
            let offer = publish.create_offer(None).await.unwrap();
            publish.set_local_description(offer.clone()).await.unwrap();
            out_tx
                .send(json!({"v": 1, "type": "offer", "target": "publish", "sdp": offer.sdp}))
                .unwrap();
        }

        let subscribe: Arc<Mutex<Option<Arc<RTCPeerConnection>>>> = Arc::default();
        // The socket: one task reads, writes, and drives both peer connections.
        let mut ws = client.ws;
        let heard2 = heard.clone();
        let heard_tx2 = heard_tx.clone();
        let out = out_tx.clone();
        tokio::spawn(async move {
            let out_tx = out;
            loop {
                tokio::select! {
                    Some(msg) = out_rx.recv() => {
                        if ws.send(Message::Text(msg.to_string().into())).await.is_err() { break; }
                    }
                    frame = ws.next() => {
                        let Some(Ok(Message::Text(t))) = frame else {
                            if matches!(frame, Some(Ok(_))) { continue; }
                            break;
                        };
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        match (v["type"].as_str().unwrap(), v["target"].as_str()) {
                            ("answer", Some("publish")) => {
                                let sdp = v["sdp"].as_str().unwrap().to_string();
                                publish.set_remote_description(RTCSessionDescription::answer(sdp).unwrap()).await.unwrap();
                            }
                            ("offer", Some("subscribe")) => {
                                let pc = {
                                    let mut slot = subscribe.lock().await;
                                    if slot.is_none() {
                                        let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await.unwrap());
                                        watch_candidates(&pc, "subscribe", out_tx.clone());
                                        let heard = heard2.clone();
                                        let notify = heard_tx2.clone();
                                        pc.on_track(Box::new(move |track, receiver, _| {
                                            let publisher = track.stream_id();
                                            tokio::spawn(listen(track, heard.clone(), notify.clone()));
                                            let heard = heard.clone();
                                            tokio::spawn(async move {
                                                while let Ok((packets, _)) = receiver.read_rtcp().await {
                                                    let srs = packets.iter().filter(|p| p.as_any().is::<webrtc::rtcp::sender_report::SenderReport>()).count();
                                                    heard.lock().await.entry(publisher.clone()).or_default().sender_reports += srs;
                                                }
                                            });
                                            Box::pin(async {})
                                        }));
                                        *slot = Some(pc);
                                    }
                                    slot.clone().unwrap()
                                };
                                let sdp = v["sdp"].as_str().unwrap().to_string();
                                pc.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.unwrap();
                                let answer = pc.create_answer(None).await.unwrap();
                                pc.set_local_description(answer.clone()).await.unwrap();
                                out_tx.send(json!({"v": 1, "type": "answer", "target": "subscribe", "sdp": answer.sdp})).unwrap();
                            }
                            ("candidate", Some(target)) => {
                                let c = &v["candidate"];
                                let init = RTCIceCandidateInit {
                                    candidate: c["candidate"].as_str().unwrap().to_string(),
                                    sdp_mid: c["sdp_mid"].as_str().map(str::to_string),
                                    sdp_mline_index: c["sdp_mline_index"].as_u64().map(|i| i as u16),
                                    username_fragment: None,
                                };
                                let pc = if target == "publish" { Some(publish.clone()) } else { subscribe.lock().await.clone() };
                                if let Some(pc) = pc { pc.add_ice_candidate(init).await.unwrap(); }
                            }
                            _ => { let _ = ev_tx.send(v); }
                        }
                    }
                }
            }
            let _ = publish.close().await;
            if let Some(pc) = subscribe.lock().await.take() {
                let _ = pc.close().await;
            }
        });
        Participant {
            out: out_tx,
            events: ev_rx,
            heard,
            heard_tx,
            heard_rx,
            participant_id,
            joined,
        }
    }

    /// Waits (up to 20 s) until `check` holds for what this participant heard.
    async fn until(&mut self, what: &str, check: impl Fn(&HashMap<String, Heard>) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if check(&*self.heard.lock().await) {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, self.heard_rx.recv())
                .await
                .is_err()
            {
                panic!(
                    "timed out waiting for {what}: {:?}",
                    self.heard.lock().await
                );
            }
        }
    }

    /// The next signaling event of `kind` (other events before it are skipped).
    async fn event(&mut self, kind: &str) -> Value {
        loop {
            let v = tokio::time::timeout(Duration::from_secs(20), self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} within 20 s"))
                .expect("socket open");
            if v["type"] == kind {
                return v;
            }
        }
    }

    fn leave(&self) {
        let _ = self.out.send(json!({"v": 1, "type": "leave"}));
        let _ = &self.heard_tx;
    }
}

fn watch_candidates(
    pc: &Arc<RTCPeerConnection>,
    target: &'static str,
    out: mpsc::UnboundedSender<Value>,
) {
    pc.on_ice_candidate(Box::new(move |c| {
        let out = out.clone();
        Box::pin(async move {
            if let Some(c) = c {
                let init = c.to_json().unwrap();
                let _ = out.send(json!({"v": 1, "type": "candidate", "target": target, "candidate": {
                    "candidate": init.candidate, "sdp_mid": init.sdp_mid, "sdp_mline_index": init.sdp_mline_index}}));
            }
        })
    }));
}

/// Encodes a sine tone with Opus and sends it in 20 ms frames, in real time.
async fn play_tone(track: Arc<TrackLocalStaticSample>, hz: f64) {
    let mut enc = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Audio).unwrap();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut n: u64 = 0;
    let mut buf = vec![0u8; 4000];
    for _ in 0..3000 {
        ticker.tick().await;
        let pcm: Vec<i16> = (0..FRAME)
            .map(|i| {
                let t = (n + i as u64) as f64 / f64::from(RATE);
                ((t * hz * std::f64::consts::TAU).sin() * 12_000.0) as i16
            })
            .collect();
        n += FRAME as u64;
        let len = enc.encode(&pcm, &mut buf).unwrap();
        let sample = Sample {
            data: bytes::Bytes::copy_from_slice(&buf[..len]),
            duration: Duration::from_millis(20),
            ..Default::default()
        };
        if track.write_sample(&sample).await.is_err() {
            return;
        }
    }
}

/// Receives one remote track: depacketised Opus frames are decoded and their pitch measured.
async fn listen(
    track: Arc<webrtc::track::track_remote::TrackRemote>,
    heard: Arc<Mutex<HashMap<String, Heard>>>,
    notify: mpsc::UnboundedSender<()>,
) {
    let publisher = track.stream_id();
    let mut dec = opus::Decoder::new(RATE, opus::Channels::Mono).unwrap();
    let mut pcm = vec![0i16; 5760];
    let mut window: Vec<i16> = Vec::new();
    while let Ok((packet, _)) = track.read_rtp().await {
        let Ok(n) = dec.decode(&packet.payload, &mut pcm, false) else {
            continue;
        };
        window.extend_from_slice(&pcm[..n]);
        let mut h = heard.lock().await;
        let e = h.entry(publisher.clone()).or_default();
        e.packets += 1;
        // Measure over the last second, skipping the decoder's first frames.
        if window.len() >= RATE as usize + 5 * FRAME {
            let w = &window[window.len() - RATE as usize..];
            let crossings = w.windows(2).filter(|p| (p[0] < 0) != (p[1] < 0)).count();
            e.hz = crossings as f64 / 2.0;
            window.drain(..window.len() - RATE as usize);
        }
        drop(h);
        let _ = notify.send(());
    }
    heard.lock().await.entry(publisher).or_default().ended = true;
    let _ = notify.send(());
}

fn hears(h: &HashMap<String, Heard>, who: &str, hz: f64) -> bool {
    h.get(who).is_some_and(|x| (x.hz - hz).abs() < hz * 0.03)
}

async fn three_participants_hear_each_other(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (a, b, c) = (
        srv.user("alto").await,
        srv.user("bass").await,
        srv.user("cello").await,
    );
    let room = srv
        .create_room(&a, json!({"name": "Choir", "privacy": "public"}))
        .await;
    let id = room["id"].as_str().unwrap();

    let mut pa = Participant::join(&srv, &a, id, Some(440.0)).await;
    let mut pb = Participant::join(&srv, &b, id, Some(660.0)).await;
    let (ida, idb) = (pa.participant_id.clone(), pb.participant_id.clone());
    pa.until("A hears B's 660 Hz", |h| hears(h, &idb, 660.0))
        .await;
    pb.until("B hears A's 440 Hz", |h| hears(h, &ida, 440.0))
        .await;

    // A late joiner who publishes nothing gets both, at once.
    let mut pc = Participant::join(&srv, &c, id, None).await;
    pc.until("C hears A and B", |h| {
        hears(h, &ida, 440.0) && hears(h, &idb, 660.0)
    })
    .await;
    // C was told of A's published track when joining.
    let a_info = pc.joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant_id"] == ida.as_str())
        .expect("A listed");
    assert_eq!(a_info["tracks"][0]["kind"], "audio");
    assert_eq!(a_info["tracks"][0]["track_id"], format!("{ida}:audio"));
    {
        let h = pa.heard.lock().await;
        assert!(!h.contains_key(&ida), "nobody hears themself");
        assert!(!h.contains_key(&pc.participant_id), "C sends nothing");
    }

    // The server's RTCP sender reports reach subscribers (they map RTP time to wall time).
    pc.until("sender reports for A's track", |h| {
        h.get(&ida).is_some_and(|x| x.sender_reports > 0)
    })
    .await;

    // B mutes: the server stops forwarding B's audio and says so; unmuted, it flows again.
    pb.out
        .send(json!({"v": 1, "type": "mute", "kind": "audio", "muted": true}))
        .unwrap();
    let m = pc.event("mute_changed").await;
    assert_eq!(
        (m["participant_id"].as_str(), m["muted"].as_bool()),
        (Some(idb.as_str()), Some(true))
    );
    // What was in flight when the mute took effect may still land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let muted_at = pc.heard.lock().await[&idb].packets;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = pc.heard.lock().await[&idb].packets;
    // Unmuted, a second brings 50; a busy machine may still be handing over a few.
    assert!(
        after < muted_at + 10,
        "B muted, yet {} packets reached C",
        after - muted_at
    );
    pb.out
        .send(json!({"v": 1, "type": "mute", "kind": "audio", "muted": false}))
        .unwrap();
    pc.until("B's audio flows again", |h| h[&idb].packets > after + 10)
        .await;

    // A leaves: A's track ends for B and C, and they are told.
    pa.leave();
    pb.until("A's track ends for B", |h| {
        h.get(&ida).is_some_and(|x| x.ended)
    })
    .await;
    pc.until("A's track ends for C", |h| {
        h.get(&ida).is_some_and(|x| x.ended)
    })
    .await;
    let gone = pc.event("track_unpublished").await;
    assert_eq!(gone["participant_id"], ida.as_str());
    // B is still heard by C.
    let before = pc.heard.lock().await.get(&idb).map_or(0, |x| x.packets);
    pc.until("B still reaches C", |h| {
        h.get(&idb).is_some_and(|x| x.packets > before + 10)
    })
    .await;
    srv.stop().await;
}

/// A WHEP viewer on webrtc-rs: a receive-only audio offer (candidates gathered), and a count
/// of the RTP packets that arrive once an answer is set.
struct Watcher {
    pc: Arc<RTCPeerConnection>,
    offer: String,
    packets: Arc<AtomicUsize>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Watcher {
    async fn new() -> Watcher {
        let pc = Arc::new(
            api()
                .new_peer_connection(RTCConfiguration::default())
                .await
                .unwrap(),
        );
        pc.add_transceiver_from_kind(
            RTPCodecType::Audio,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                send_encodings: Vec::new(),
            }),
        )
        .await
        .unwrap();
        let packets = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (n, notify) = (packets.clone(), arrived.clone());
        pc.on_track(Box::new(move |track, _, _| {
            let (n, notify) = (n.clone(), notify.clone());
            tokio::spawn(async move {
                while track.read_rtp().await.is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                    notify.notify_one();
                }
            });
            Box::pin(async {})
        }));
        let offer = pc.create_offer(None).await.unwrap();
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(offer).await.unwrap();
        let _ = gathered.recv().await;
        let offer = pc.local_description().await.unwrap().sdp;
        Watcher {
            pc,
            offer,
            packets,
            arrived,
        }
    }

    /// Posts the offer (again while nobody publishes yet, up to 20 s).
    async fn post(&self, srv: &TestServer, s: &Session, room: &str) -> common::Reply {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = srv
                .send(
                    srv.req(
                        reqwest::Method::POST,
                        &format!("/api/rooms/{room}/whep"),
                        Some(&s.access),
                    )
                    .header("content-type", "application/sdp")
                    .body(self.offer.clone()),
                )
                .await;
            let waiting_for_media = r.status.as_u16() == 409 && r.code() == "nothing_to_watch";
            if !waiting_for_media || tokio::time::Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes the server's answer; returns the session id from `Location`.
    async fn answered(&self, r: &common::Reply) -> String {
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
        let sdp = String::from_utf8(r.bytes.clone()).unwrap();
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp).unwrap())
            .await
            .unwrap();
        let location = r.headers["location"].to_str().unwrap();
        location.rsplit('/').next().unwrap().to_string()
    }

    async fn receives(&self) {
        let want = self.packets.load(Ordering::Relaxed) + 10;
        tokio::time::timeout(Duration::from_secs(20), async {
            while self.packets.load(Ordering::Relaxed) < want {
                self.arrived.notified().await;
            }
        })
        .await
        .expect("the viewer receives the host's audio within 20 s");
    }
}

/// The participant announced by the next `participant_joined`.
async fn next_arrival(p: &mut Participant) -> Value {
    p.event("participant_joined").await["participant"].clone()
}

async fn whep_viewers_are_admitted_like_joiners(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let srv = env.start().await;
    let (host, guest) = (srv.user("hostess").await, srv.user("guest").await);
    let room = srv
        .create_room(
            &host,
            json!({"name": "Clinic", "privacy": "public", "waiting_room": true}),
        )
        .await;
    let id = room["id"].as_str().unwrap().to_string();
    let mut ph = Participant::join(&srv, &host, &id, Some(440.0)).await;
    let seats = |n: u64| {
        let (srv, id, host) = (&srv, &id, &host);
        async move {
            let r = srv.get(&format!("/api/rooms/{id}"), &host.access).await;
            assert_eq!(r.expect(200)["participant_count"], n, "{}", r.body);
        }
    };

    // A stranger may not watch a meeting behind a waiting room, as they may not join it.
    let w = Watcher::new().await;
    w.post(&srv, &guest, &id)
        .await
        .expect_error(403, "waiting_room");
    seats(1).await;

    // Let in once from the waiting room, the guest is a member of the room...
    let mut cg = Client::connect(&srv, &guest).await;
    cg.send(json!({"v": 1, "type": "join", "room_id": id}))
        .await;
    cg.expect("waiting").await;
    let knock = ph.event("knocking").await;
    ph.out
        .send(json!({"v": 1, "type": "admit", "request_id": knock["request_id"]}))
        .unwrap();
    cg.expect("admitted").await;
    cg.expect("joined").await;
    let in_call = next_arrival(&mut ph).await;
    assert_eq!(in_call["viewer"], false);
    cg.send(json!({"v": 1, "type": "leave"})).await;
    assert_eq!(
        ph.event("participant_left").await["participant_id"],
        in_call["participant_id"]
    );

    // ...and now may watch: the host sees the viewer arrive, listed as one, in a seat.
    let r = w.post(&srv, &guest, &id).await;
    let viewer = w.answered(&r).await;
    let listed = next_arrival(&mut ph).await;
    assert_eq!(listed["participant_id"], viewer.as_str(), "{listed}");
    assert_eq!(listed["viewer"], true);
    assert_eq!(listed["user"]["id"], guest.id());
    w.receives().await;
    seats(2).await;

    // The host removes the viewer: everyone is told, and the session is gone.
    srv.delete(&format!("/api/rooms/{id}/whep/{viewer}"), &host.access)
        .await
        .expect(200);
    let left = ph.event("participant_left").await;
    assert_eq!(left["participant_id"], viewer.as_str());
    assert_eq!(left["reason"], "removed");
    srv.delete(&format!("/api/rooms/{id}/whep/{viewer}"), &guest.access)
        .await
        .expect_error(404, "not_found");
    seats(1).await;
    let _ = w.pc.close().await;

    // A member watches again; removed from the room by the host, the viewer is cut and the
    // waiting room applies again.
    let w = Watcher::new().await;
    let r = w.post(&srv, &guest, &id).await;
    let viewer = w.answered(&r).await;
    assert_eq!(
        next_arrival(&mut ph).await["participant_id"],
        viewer.as_str()
    );
    w.receives().await;
    srv.delete(
        &format!("/api/rooms/{id}/members/{}", guest.id()),
        &host.access,
    )
    .await
    .expect(204);
    let left = ph.event("participant_left").await;
    assert_eq!(left["participant_id"], viewer.as_str());
    assert_eq!(left["reason"], "removed");
    let _ = w.pc.close().await;
    let w = Watcher::new().await;
    w.post(&srv, &guest, &id)
        .await
        .expect_error(403, "waiting_room");
    seats(1).await;

    // One person watches a room at most four times at once.
    let mut open = Vec::new();
    for _ in 0..4 {
        let w = Watcher::new().await;
        let r = w.post(&srv, &host, &id).await;
        w.answered(&r).await;
        open.push(w);
    }
    Watcher::new()
        .await
        .post(&srv, &host, &id)
        .await
        .expect_error(429, "too_many_viewers");
    for w in open {
        let _ = w.pc.close().await;
    }
    srv.stop().await;
}

/// Live connections end with the session they were opened with (issue 14, item 2): signing
/// out, changing the password (on another device) or resetting it closes the signaling
/// sockets and takes the call places and WHEP viewers made through the ended sessions out of
/// the meeting at once, without a grace period; the sessions that live on keep theirs.
async fn live_connections_end_with_their_session(backend: Backend) {
    let mut sink = SmtpSink::start().await;
    let mut env = TestEnv::new(backend).await;
    env.smtp_url = Some(sink.url.clone());
    let srv = env.start().await;
    let host = srv.user("hostess").await;
    let ann = srv.user("ann").await;
    let ann_laptop = srv.session("ann", PASSWORD).await;
    let id = srv
        .room_id(&host, json!({"name": "Standup", "privacy": "public"}))
        .await;
    let mut ph = Participant::join(&srv, &host, &id, Some(440.0)).await;

    // Ann is in the call and watches it by WHEP too, signed in once; her laptop, signed in
    // separately, is connected and in no room.
    let mut call = Client::connect(&srv, &ann).await;
    let in_call = call.join(&id).await["participant_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        next_arrival(&mut ph).await["participant_id"],
        in_call.as_str()
    );
    let w = Watcher::new().await;
    let r = w.post(&srv, &ann, &id).await;
    let viewer = w.answered(&r).await;
    assert_eq!(
        next_arrival(&mut ph).await["participant_id"],
        viewer.as_str()
    );
    w.receives().await;
    let mut laptop = Client::connect(&srv, &ann_laptop).await;

    // She signs out of the first session: its socket hears why and is closed; both its places
    // leave the meeting for good (no "reconnecting"); the laptop's socket stays.
    srv.post(
        "/api/auth/logout",
        Some(&ann.access),
        json!({"refresh_token": ann.refresh}),
    )
    .await
    .expect(204);
    assert_eq!(call.skip_to("left").await["reason"], "session_ended");
    call.expect_error("session_ended").await;
    call.expect_closed().await;
    let mut gone = Vec::new();
    for _ in 0..2 {
        let left = ph.event("participant_left").await;
        assert_eq!(left["reason"], "session_ended", "{left}");
        gone.push(left["participant_id"].as_str().unwrap().to_string());
    }
    gone.sort();
    let mut expected = vec![in_call, viewer.clone()];
    expected.sort();
    assert_eq!(gone, expected);
    srv.delete(&format!("/api/rooms/{id}/whep/{viewer}"), &host.access)
        .await
        .expect_error(404, "not_found");
    let _ = w.pc.close().await;
    laptop.expect_quiet().await;
    // The ended session's token opens nothing new.
    srv.get("/api/auth/profile", &ann.access)
        .await
        .expect_error(401, "unauthenticated");

    // A password changed on the laptop ends her other sessions (a phone here), not the
    // laptop's.
    let ann_phone = srv.session("ann", PASSWORD).await;
    let mut phone = Client::connect(&srv, &ann_phone).await;
    phone.join(&id).await;
    next_arrival(&mut ph).await;
    srv.post(
        "/api/users/me/password",
        Some(&ann_laptop.access),
        json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
    )
    .await
    .expect(204);
    assert_eq!(phone.skip_to("left").await["reason"], "session_ended");
    phone.expect_error("session_ended").await;
    phone.expect_closed().await;
    assert_eq!(
        ph.event("participant_left").await["reason"],
        "session_ended"
    );
    laptop.expect_quiet().await;

    // A reset by mail ends every session, the laptop's too.
    srv.post(
        "/api/auth/password/forgot",
        None,
        json!({"email": "ann@example.com"}),
    )
    .await
    .expect(202);
    let token = reset_token(&sink.next().await.data);
    srv.post(
        "/api/auth/password/reset",
        None,
        json!({"token": token, "password": "the newest password"}),
    )
    .await
    .expect(204);
    laptop.expect_error("session_ended").await;
    laptop.expect_closed().await;
    ph.leave();
    srv.stop().await;
}

/// A signaling connection that outlives the access token it was opened with asks again when
/// the token expires: it carries on while the session lives, and closes at the next check once
/// the session has ended, even when nothing announced it (revoked in the database only).
async fn a_connection_outliving_its_token_is_checked_again(backend: Backend) {
    let mut env = TestEnv::new(backend).await;
    env.access_ttl = Some(Duration::from_secs(2));
    let srv = env.start().await;
    let otto = srv.user("otto").await;
    let mut c = Client::connect(&srv, &otto).await;
    let expires_at = {
        use base64::Engine;
        let payload = otto.access.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["exp"].as_i64().unwrap()
    };
    // Wait on the clock until the token is past its expiry (and the connection's check at
    // that moment has had time to run).
    let now = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    };
    common::until(
        "the access token to expire",
        Duration::from_secs(30),
        || now() > expires_at + 1,
    )
    .await;
    c.expect_quiet().await;
    srv.get("/api/auth/profile", &otto.access)
        .await
        .expect_error(401, "token_expired");

    sqlx::query("UPDATE sessions SET revoked_at = 1 WHERE id = $1")
        .bind(otto.session_id())
        .execute(&srv.server.state.db)
        .await
        .unwrap();
    c.expect_error("session_ended").await;
    c.expect_closed().await;
    srv.stop().await;
}
