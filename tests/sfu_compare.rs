//! `sfu-compare`: the same load on our SFU and on Janus VideoRoom (Debian's `janus`, started
//! here with a generated configuration), one after the other, from the same load generator,
//! and the figures side by side. Figures, not assertions.
//!
//! ```sh
//! apt-get install janus    # once
//! cargo build --release -p convo-server -p convo-e2e
//! target/release/sfu-compare --publishers 5 --viewers 10 --duration 20
//! ```
//!
//! The load: `--publishers` senders of one H.264 camera (`--video`, `--fps`, `--kbps`; encoded
//! once with OpenH264 and replayed) and one Opus voice, and `--viewers` viewers who each watch
//! every publisher on a receive-only connection of its own (publishers × viewers forwarded
//! video streams, and as many audio). Ours is driven by WHIP (publishers) and WHEP pinned to
//! a publisher (viewers); Janus by its VideoRoom API over HTTP (publishers, and a subscriber
//! handle per feed). Viewers count the RTP packets they get and decode nothing, so the
//! generator costs little beside the SFU; the SFU's CPU and memory are read from /proc for its
//! process alone. ICE on loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use convo_client::api::Api;
use convo_client::synth::{self, FrameCode, Pattern, VideoSize};
use convo_client::video_out::h264;
use convo_e2e::webdriver::free_port;
use convo_e2e::{bench_room, proc_usage, register, wait_until_serving};
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod};
use openh264::formats::YUVSlices;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
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

#[derive(Parser, Debug, Clone)]
struct Cli {
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    #[arg(long, default_value_t = 5)]
    viewers: usize,
    /// Seconds measured (after the calls are set up and a few seconds of warm-up).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    #[arg(long, default_value = "320x240", value_parser = VideoSize::parse)]
    video: VideoSize,
    #[arg(long, default_value_t = 15)]
    fps: u32,
    #[arg(long, default_value_t = 300)]
    kbps: u32,
    /// Only one of the two: convo or janus.
    #[arg(long)]
    only: Option<String>,
}

/// The media every publisher sends: encoded once, replayed in a loop.
struct Clip {
    video: Vec<Bytes>,
    audio: Bytes,
    fps: u32,
}

fn clip(cli: &Cli) -> Clip {
    let frames = cli.fps * 4;
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(cli.kbps * 1000))
        .max_frame_rate(FrameRate::from_hz(cli.fps as f32))
        .skip_frames(true)
        // A keyframe at the start of every loop: the replay can start anywhere after one.
        .intra_frame_period(IntraFramePeriod::from_num_frames(frames));
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).expect("OpenH264");
    let (w, h) = (cli.video.width, cli.video.height);
    let video = (0..frames)
        .map(|counter| {
            let i420 = synth::frame(
                FrameCode {
                    counter,
                    capture_ms: 0,
                },
                Pattern::Camera,
                cli.video,
            );
            let (y, uv) = i420.split_at(w * h);
            let (u, v) = uv.split_at(w * h / 4);
            let yuv = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
            Bytes::from(enc.encode(&yuv).expect("encode").to_vec())
        })
        .collect();
    let mut opus =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("Opus");
    let pcm = synth::tone(440.0, 0, 960);
    let mut buf = vec![0u8; 4000];
    let n = opus.encode(&pcm, &mut buf).expect("opus encode");
    Clip {
        video,
        audio: Bytes::copy_from_slice(&buf[..n]),
        fps: cli.fps,
    }
}

/// The bench runs in a network namespace of its own (made and removed by [`main`]) whose one
/// interface (besides loopback) has this address: media goes over it, and ICE (ours, webrtc-rs's,
/// Janus's libnice, which ignores loopback) sees nothing else.
const MEDIA_IP: &str = "10.96.0.1";
const INSIDE: &str = "SFU_COMPARE_NETNS";

fn media_ip() -> std::net::IpAddr {
    MEDIA_IP.parse().expect("an address")
}

fn opus_codec() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        ..Default::default()
    }
}

fn webrtc_api() -> webrtc::api::API {
    let mut m = MediaEngine::default();
    m.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut m).unwrap();
    let mut s = SettingEngine::default();
    let media = media_ip();
    s.set_ip_filter(Box::new(move |ip| ip == media));
    APIBuilder::new()
        .with_media_engine(m)
        .with_interceptor_registry(registry)
        .with_setting_engine(s)
        .build()
}

/// The local description once every candidate is in it (no trickling).
async fn gathered(pc: &RTCPeerConnection, desc: RTCSessionDescription) -> String {
    let mut done = pc.gathering_complete_promise().await;
    pc.set_local_description(desc).await.unwrap();
    let _ = done.recv().await;
    pc.local_description().await.unwrap().sdp
}

/// A publisher's connection, its tracks fed from `clip` until the connection closes.
async fn publisher(api: &webrtc::api::API, clip: &Arc<Clip>) -> Arc<RTCPeerConnection> {
    let pc = Arc::new(
        api.new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap(),
    );
    let video = Arc::new(TrackLocalStaticSample::new(
        h264(),
        "video".into(),
        "bench".into(),
    ));
    let audio = Arc::new(TrackLocalStaticSample::new(
        opus_codec(),
        "audio".into(),
        "bench".into(),
    ));
    for t in [video.clone(), audio.clone()] {
        let sender = pc
            .add_track(t as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .unwrap();
        // Reading RTCP lets the interceptors answer NACKs.
        tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
    }
    let (clip, weak) = (clip.clone(), Arc::downgrade(&pc));
    tokio::spawn(async move {
        let frame = Duration::from_secs(1) / clip.fps;
        let mut every = tokio::time::interval(frame);
        let (mut n, mut audio_due) = (0usize, Instant::now());
        while weak.strong_count() > 0 {
            every.tick().await;
            let sample = Sample {
                data: clip.video[n % clip.video.len()].clone(),
                duration: frame,
                ..Default::default()
            };
            let _ = video.write_sample(&sample).await;
            n += 1;
            while audio_due <= Instant::now() {
                let sample = Sample {
                    data: clip.audio.clone(),
                    duration: Duration::from_millis(20),
                    ..Default::default()
                };
                let _ = audio.write_sample(&sample).await;
                audio_due += Duration::from_millis(20);
            }
        }
    });
    pc
}

/// Packets the viewers received, video and audio.
#[derive(Default)]
struct Received {
    video: AtomicU64,
    audio: AtomicU64,
}

fn count_into(pc: &RTCPeerConnection, received: &Arc<Received>) {
    let received = received.clone();
    pc.on_track(Box::new(move |track, _, _| {
        let received = received.clone();
        tokio::spawn(async move {
            let counter = if track.kind() == RTPCodecType::Video {
                &received.video
            } else {
                &received.audio
            };
            while track.read_rtp().await.is_ok() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Box::pin(async {})
    }));
}

/// A receive-only viewer connection (for ours: it offers).
async fn viewer(api: &webrtc::api::API, received: &Arc<Received>) -> Arc<RTCPeerConnection> {
    let pc = Arc::new(
        api.new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap(),
    );
    for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();
    }
    count_into(&pc, received);
    pc
}

/// A server process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a run measured.
struct Figures {
    name: &'static str,
    cpu_s: f64,
    packets: u64,
    video_packets: u64,
    secs: f64,
    rss_kib: u64,
    idle_rss_kib: u64,
    sent_video_packets: u64,
}

/// Runs the load against a server that is up: `publish` turns a publisher's offer into its
/// answer (and an id viewers name), `watch` connects viewer `v` to publisher `p`'s id.
async fn measure<P, W, FP, FW>(
    name: &'static str,
    pid: u32,
    cli: &Cli,
    clip: &Arc<Clip>,
    publish: P,
    watch: W,
) -> Figures
where
    P: Fn(usize, String) -> FP,
    FP: Future<Output = (String, String)>,
    W: Fn(usize, usize, String, Arc<Received>) -> FW,
    FW: Future<Output = Arc<RTCPeerConnection>>,
{
    let idle_rss_kib = proc_usage(pid).1;
    let api = webrtc_api();
    let mut pcs = Vec::new();
    let mut ids = Vec::new();
    for p in 0..cli.publishers {
        let pc = publisher(&api, clip).await;
        let offer = pc.create_offer(None).await.unwrap();
        let sdp = gathered(&pc, offer).await;
        let (answer, id) = publish(p, sdp).await;
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        ids.push(id);
        pcs.push(pc);
    }
    let received = Arc::new(Received::default());
    let mut viewers = Vec::new();
    for v in 0..cli.viewers {
        for (p, id) in ids.iter().enumerate() {
            viewers.push(watch(v, p, id.clone(), received.clone()).await);
        }
    }
    // Everyone connected and the first keyframes through, then the measured window.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent0 = sent_video(&pcs).await;
    let (cpu0, _) = proc_usage(pid);
    let (v0, a0) = (
        received.video.load(Ordering::Relaxed),
        received.audio.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.duration)).await;
    let (cpu1, rss_kib) = proc_usage(pid);
    let secs = t0.elapsed().as_secs_f64();
    let (v1, a1) = (
        received.video.load(Ordering::Relaxed),
        received.audio.load(Ordering::Relaxed),
    );
    let sent1 = sent_video(&pcs).await;
    for pc in viewers.iter().chain(&pcs) {
        let _ = pc.close().await;
    }
    Figures {
        name,
        cpu_s: cpu1 - cpu0,
        packets: (v1 - v0) + (a1 - a0),
        video_packets: v1 - v0,
        secs,
        rss_kib,
        idle_rss_kib,
        sent_video_packets: sent1.saturating_sub(sent0),
    }
}

/// Video packets the publishers sent so far.
async fn sent_video(pcs: &[Arc<RTCPeerConnection>]) -> u64 {
    let mut n = 0;
    for pc in pcs {
        for (_, s) in pc.get_stats().await.reports {
            if let webrtc::stats::StatsReportType::OutboundRTP(o) = s
                && o.kind == "video"
            {
                n += o.packets_sent;
            }
        }
    }
    n
}

async fn run_convo(cli: &Cli, clip: &Arc<Clip>) -> Figures {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("convo-server");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Proc(
        Command::new(&bin)
            .env("CONVO_DATA_DIR", dir.path())
            .env("CONVO_BIND", format!("127.0.0.1:{port}"))
            .env("CONVO_ICE_IPS", MEDIA_IP)
            // One account per load session, all from one address.
            .env("CONVO_REGISTRATIONS_PER_HOUR", "0")
            .env("CONVO_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (build it first)", bin.display())),
    );
    let base = format!("http://127.0.0.1:{port}");
    let api = Api::new(&base);
    wait_until_serving(&api).await;
    let host = register(&api, "host").await;
    let room = bench_room(&api, &host).await;
    let http = reqwest::Client::new();
    // One account per session: a user may watch a room at most 4 times at once.
    let mut tokens = Vec::new();
    for i in 0..cli.publishers * (1 + cli.viewers) {
        tokens.push(register(&api, &format!("load{i}")).await);
    }
    let tokens = Arc::new(tokens);
    let post = |path: String, token: String, sdp: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let resp = http
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .header("content-type", "application/sdp")
                .body(sdp)
                .send()
                .await
                .unwrap();
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            (status, body, location)
        }
    };
    let pid = server.0.id();
    let (room2, tokens2) = (room.clone(), tokens.clone());
    measure(
        "convo",
        pid,
        cli,
        clip,
        |p, sdp| {
            let (room, token) = (room.clone(), tokens[p].clone());
            let post = &post;
            async move {
                let path = format!("/api/rooms/{room}/whip");
                let (status, answer, location) = post(path.clone(), token, sdp).await;
                assert!(status.is_success(), "{path}: {status} {answer}");
                let id = location.rsplit('/').next().unwrap_or_default().to_string();
                (answer, id)
            }
        },
        |v, p, id, received| {
            let token = tokens2[cli.publishers * (1 + v) + p].clone();
            let (room, post) = (room2.clone(), &post);
            async move {
                let api = webrtc_api();
                let pc = viewer(&api, &received).await;
                let offer = pc.create_offer(None).await.unwrap();
                let sdp = gathered(&pc, offer).await;
                // Until the publisher's media arrives there is nothing to watch (409).
                let path = format!("/api/rooms/{room}/whep?participant={id}");
                let end = Instant::now() + Duration::from_secs(30);
                let answer = loop {
                    let (status, body, _) = post(path.clone(), token.clone(), sdp.clone()).await;
                    if status.is_success() {
                        break body;
                    }
                    assert!(
                        status == reqwest::StatusCode::CONFLICT && Instant::now() < end,
                        "{path}: {status} {body}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
                    .await
                    .unwrap();
                pc
            }
        },
    )
    .await
}

/// Janus's HTTP API: sessions, handles, long-polled events routed to their handle.
#[derive(Clone)]
struct Janus {
    http: reqwest::Client,
    base: String,
    /// Per handle: where its events go.
    handles: Arc<Mutex<std::collections::HashMap<u64, mpsc::UnboundedSender<Value>>>>,
}

impl Janus {
    async fn post(&self, path: &str, mut body: Value) -> Value {
        body["transaction"] = json!(uuid::Uuid::new_v4().to_string());
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A new session, long-polled for events (which also keeps it alive).
    async fn session(&self) -> u64 {
        let r = self.post("/janus", json!({"janus": "create"})).await;
        let id = r["data"]["id"].as_u64().expect("session id");
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok(resp) = me
                    .http
                    .get(format!("{}/janus/{id}?maxev=10", me.base))
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(events) = resp.json::<Value>().await else {
                    break;
                };
                let list = match events {
                    Value::Array(l) => l,
                    one => vec![one],
                };
                for e in list {
                    if let Some(sender) = e["sender"].as_u64()
                        && let Some(tx) = me.handles.lock().await.get(&sender)
                    {
                        let _ = tx.send(e);
                    }
                }
            }
        });
        id
    }

    /// A VideoRoom handle on `session`, and its events.
    async fn attach(&self, session: u64) -> (u64, mpsc::UnboundedReceiver<Value>) {
        let r = self
            .post(
                &format!("/janus/{session}"),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await;
        let handle = r["data"]["id"].as_u64().expect("handle id");
        let (tx, rx) = mpsc::unbounded_channel();
        self.handles.lock().await.insert(handle, tx);
        (handle, rx)
    }

    async fn message(&self, session: u64, handle: u64, body: Value, jsep: Option<Value>) {
        let mut m = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        let r = self.post(&format!("/janus/{session}/{handle}"), m).await;
        assert!(
            r["janus"] == "ack" || r["janus"] == "success",
            "Janus refused {r}"
        );
    }

    /// The next event of a handle that carries a JSEP (and its plugin data), or the plugin's
    /// error.
    async fn jsep(
        rx: &mut mpsc::UnboundedReceiver<Value>,
        pc: Option<&RTCPeerConnection>,
    ) -> Result<Value, Value> {
        loop {
            let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await else {
                return Err(json!({"error": "no answer from Janus within 30 s"}));
            };
            if e["janus"] == "trickle" {
                if let (Some(pc), Some(c)) = (pc, e["candidate"]["candidate"].as_str()) {
                    let _ = pc
                        .add_ice_candidate(RTCIceCandidateInit {
                            candidate: c.to_string(),
                            sdp_mid: e["candidate"]["sdpMid"].as_str().map(str::to_string),
                            sdp_mline_index: e["candidate"]["sdpMLineIndex"]
                                .as_u64()
                                .map(|i| i as u16),
                            username_fragment: None,
                        })
                        .await;
                }
                continue;
            }
            if !e["jsep"].is_null() {
                return Ok(e);
            }
            if !e["plugindata"]["data"]["error"].is_null() {
                return Err(e["plugindata"]["data"].clone());
            }
        }
    }
}

fn janus_config(dir: &Path, http_port: u16, rtp: (u16, u16)) {
    let lib = "/usr/lib/x86_64-linux-gnu/janus";
    let d = dir.display();
    let files = [
        (
            "janus.jcfg",
            format!(
                "general: {{ configs_folder = \"{d}\" plugins_folder = \"{lib}/plugins\" \
                 transports_folder = \"{lib}/transports\" events_folder = \"{lib}/events\" \
                 loggers_folder = \"{lib}/loggers\" debug_level = 2 }}\n\
                 media: {{ rtp_port_range = \"{}-{}\" }}\n\
                 nat: {{ ice_enforce_list = \"cmp0\" ignore_mdns = true }}\n\
                 plugins: {{ disable = \"libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,\
                 libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,\
                 libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so\" }}\n\
                 transports: {{ disable = \"libjanus_websockets.so,libjanus_mqtt.so,libjanus_nanomsg.so,\
                 libjanus_pfunix.so,libjanus_rabbitmq.so\" }}\n\
                 events: {{ broadcast = false }}\nloggers: {{ disable = \"libjanus_jsonlog.so\" }}\n",
                rtp.0, rtp.1
            ),
        ),
        (
            "janus.transport.http.jcfg",
            format!(
                "general: {{ json = \"compact\" base_path = \"/janus\" http = true \
                 port = {http_port} ip = \"127.0.0.1\" }}\nadmin: {{ admin_http = false }}\n"
            ),
        ),
        (
            "janus.plugin.videoroom.jcfg",
            "general: { }\nroom-1234: { description = \"bench\" publishers = 1000 bitrate = 0 \
             videocodec = \"h264\" audiocodec = \"opus\" }\n"
                .to_string(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

async fn run_janus(cli: &Cli, clip: &Arc<Clip>) -> Figures {
    let janus_bin = PathBuf::from("/usr/bin/janus");
    assert!(
        janus_bin.exists(),
        "Janus is not installed: apt-get install janus"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    janus_config(dir.path(), port, (30000, 39999));
    let server = Proc(
        Command::new(&janus_bin)
            .arg("-F")
            .arg(dir.path())
            .arg("-C")
            .arg(dir.path().join("janus.jcfg"))
            .stdout(match std::env::var_os("SFU_COMPARE_JANUS_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .stderr(Stdio::null())
            .spawn()
            .expect("start janus"),
    );
    let janus = Janus {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
        handles: Arc::default(),
    };
    let end = Instant::now() + Duration::from_secs(30);
    while janus
        .http
        .get(format!("{}/janus/info", janus.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < end, "Janus did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = server.0.id();
    let (j1, j2) = (janus.clone(), janus.clone());
    measure(
        "janus",
        pid,
        cli,
        clip,
        |p, sdp| {
            let janus = j1.clone();
            async move {
                let session = janus.session().await;
                let (handle, mut rx) = janus.attach(session).await;
                janus
                    .message(
                        session,
                        handle,
                        json!({"request": "joinandconfigure", "ptype": "publisher", "room": 1234,
                               "display": format!("p{p}"), "audio": true, "video": true}),
                        Some(json!({"type": "offer", "sdp": sdp, "trickle": false})),
                    )
                    .await;
                let e = Janus::jsep(&mut rx, None)
                    .await
                    .unwrap_or_else(|e| panic!("Janus: {e}"));
                let id = e["plugindata"]["data"]["id"].as_u64().expect("feed id");

                (e["jsep"]["sdp"].as_str().unwrap().to_string(), id.to_string())
            }
        },
        |_, _, feed, received| {
            let janus = j2.clone();
            async move {
                let session = janus.session().await;
                let (handle, mut rx) = janus.attach(session).await;
                let feed: u64 = feed.parse().unwrap();
                // Until the publisher's media flows its feed is unknown (428): ask again.
                let end = Instant::now() + Duration::from_secs(30);
                let e = loop {
                    janus
                        .message(
                            session,
                            handle,
                            json!({"request": "join", "ptype": "subscriber", "room": 1234, "feed": feed}),
                            None,
                        )
                        .await;
                    match Janus::jsep(&mut rx, None).await {
                        Ok(e) => break e,
                        Err(e) if e["error_code"] == 428 && Instant::now() < end => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("Janus: {e}"),
                    }
                };
                let api = webrtc_api();
                let pc = Arc::new(
                    api.new_peer_connection(RTCConfiguration::default())
                        .await
                        .unwrap(),
                );
                count_into(&pc, &received);
                pc.set_remote_description(
                    RTCSessionDescription::offer(e["jsep"]["sdp"].as_str().unwrap().to_string())
                        .unwrap(),
                )
                .await
                .unwrap();
                let answer = pc.create_answer(None).await.unwrap();
                let sdp = gathered(&pc, answer).await;
                janus
                    .message(
                        session,
                        handle,
                        json!({"request": "start", "room": 1234}),
                        Some(json!({"type": "answer", "sdp": sdp, "trickle": false})),
                    )
                    .await;
                // Janus's candidates, if it trickles them.
                let pc2 = pc.clone();
                tokio::spawn(async move { while Janus::jsep(&mut rx, Some(&pc2)).await.is_ok() {} });
                pc
            }
        },
    )
    .await
}

fn print(f: &Figures, cli: &Cli) {
    let expected = f.sent_video_packets * cli.viewers as u64;
    println!(
        "{:<6} {:>8.1} {:>10.0} {:>9.2} {:>8} {:>8} {:>9.1} %",
        f.name,
        f.cpu_s / f.secs * 100.0,
        f.packets as f64 / f.secs,
        f.cpu_s / f.packets.max(1) as f64 * 1e6,
        f.rss_kib / 1024,
        f.idle_rss_kib / 1024,
        f.video_packets as f64 / expected.max(1) as f64 * 100.0,
    );
}

/// Runs `cmd args`, failing with its output.
fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    if std::env::var_os(INSIDE).is_some() {
        return tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(bench());
    }
    // Outside: make the namespace (root and iproute2 needed), run this program in it, and
    // remove the namespace whatever happened.
    let ns = format!("sfucmp{}", std::process::id());
    run("ip", &["netns", "add", &ns]);
    let status = std::panic::catch_unwind(|| {
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        // (A veth pair with both ends inside: this kernel has no dummy interfaces.)
        run(
            "ip",
            &[
                "-n", &ns, "link", "add", "cmp0", "type", "veth", "peer", "name", "cmp1",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{MEDIA_IP}/24"),
                "dev",
                "cmp0",
            ],
        );
        run("ip", &["-n", &ns, "link", "set", "cmp0", "up"]);
        run("ip", &["-n", &ns, "link", "set", "cmp1", "up"]);
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(std::env::current_exe().expect("this program"))
            .args(std::env::args().skip(1))
            .env(INSIDE, &ns)
            .status()
            .expect("run the bench in its namespace")
    });
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => std::panic::resume_unwind(e),
    }
}

async fn bench() {
    let cli = Cli::parse();
    let clip = Arc::new(clip(&cli));
    let mut runs = Vec::new();
    if cli.only.as_deref() != Some("janus") {
        runs.push(run_convo(&cli, &clip).await);
    }
    if cli.only.as_deref() != Some("convo") {
        runs.push(run_janus(&cli, &clip).await);
    }
    println!(
        "{} publishers × {} viewers = {} forwarded video streams (and as many audio), {}x{} H.264 \
         at {} fps ~{} kbit/s + Opus, {} s measured",
        cli.publishers,
        cli.viewers,
        cli.publishers * cli.viewers,
        cli.video.width,
        cli.video.height,
        cli.fps,
        cli.kbps,
        cli.duration
    );
    println!("sfu    CPU %core  packets/s  µs CPU/pkt  RSS MiB idle MiB  video delivered");
    for f in &runs {
        print(f, &cli);
    }
    if let [ours, janus] = &runs[..] {
        let per = |f: &Figures| f.cpu_s / f.packets.max(1) as f64;
        println!(
            "ratio (convo / janus): CPU per forwarded packet {:.2}, memory {:.2}",
            per(ours) / per(janus),
            ours.rss_kib as f64 / janus.rss_kib.max(1) as f64
        );
    }
}
