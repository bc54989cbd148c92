//! `convo-bot`: joins a room, publishes synthetic media, receives everyone else's, and prints
//! a report per remote track. For tests, demos and load.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use convo_client::api::Api;
use convo_client::apm::AudioProcessing;
use convo_client::apm::signals::{PlaybackMic, read_wav};
use convo_client::call::{self, CallOptions};
use convo_client::effects::{Effects, EffectsControl, PictureCamera, parse_background};
use convo_client::media::{AudioSource, Backend, MediaBackend, MediaError, Synthetic, VideoSource};
use convo_client::synth::VideoSize;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Join a ConvoConnect room as a bot with synthetic audio, camera and screen.
#[derive(Debug, Parser)]
#[command(name = "convo-bot", version, about)]
struct Cli {
    /// Server base URL, e.g. http://127.0.0.1:8080
    #[arg(long, env = "CONVO_SERVER")]
    server: String,
    #[arg(long)]
    user: String,
    /// The account's password.
    #[arg(long, env = "CONVO_BOT_PASSWORD", hide_env_values = true)]
    password: String,
    /// Room id, like abc-defg-hij.
    #[arg(long)]
    room: String,
    #[arg(long)]
    room_password: Option<String>,
    /// What to publish: any of audio, video, screen (comma-separated), or none.
    #[arg(long, default_value = "audio,video")]
    publish: String,
    /// How long to stay: 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Pitch of the published tone, in Hz.
    #[arg(long, default_value_t = 440.0)]
    tone: f64,
    /// Frame rate of the synthetic camera and screen (1 to 60).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=60))]
    fps: u32,
    /// Size of the synthetic camera's and screen's pictures, e.g. 1280x720.
    #[arg(long, default_value = "320x240", value_parser = VideoSize::parse)]
    video: VideoSize,
    /// Simulated loss: drop one in N incoming video packets (NACK retransmissions get through).
    #[arg(long, default_value_t = 0)]
    drop_video_one_in: u64,
    /// The size every remote video is drawn at, e.g. 320x180 (the server sends the simulcast
    /// layer that fits); without it, the best layer.
    #[arg(long, value_parser = VideoSize::parse)]
    view: Option<VideoSize>,
    /// Print what happens in the call (participants, tracks, reconnections) on stderr as it
    /// happens, one `event <JSON>` line each.
    #[arg(long)]
    events: bool,
    /// Publish this recording (a 16-bit mono WAV file, any rate; looped) instead of the
    /// synthetic tone. With it the audio processing below is on unless switched off.
    #[arg(long)]
    speech: Option<std::path::PathBuf>,
    /// Echo cancellation on the microphone: on or off (default: on with --speech, off for the
    /// synthetic tone, whose checks want it untouched).
    #[arg(long, value_parser = on_off)]
    aec: Option<bool>,
    /// Noise suppression: on or off (defaults as --aec).
    #[arg(long, value_parser = on_off)]
    ns: Option<bool>,
    /// Automatic gain control: on or off (defaults as --aec).
    #[arg(long, value_parser = on_off)]
    agc: Option<bool>,
    /// The camera shows this picture (PNG or JPEG, scaled and cropped to --video) instead of
    /// the synthetic pattern: a person, for the video effects.
    #[arg(long)]
    camera_image: Option<std::path::PathBuf>,
    /// The camera's background: none, blur, blur-strong, a built-in picture (dusk, studio,
    /// aurora) or a picture file's path.
    #[arg(long, default_value = "none")]
    background: String,
    /// Touch up the camera's picture (brighter, smoother skin).
    #[arg(long)]
    touch_up: bool,
    /// Report format.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    report: String,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: use on or off")),
    }
}

/// The synthetic backend, with a recording for a microphone and a picture for a camera if
/// given.
struct BotMedia {
    synthetic: Synthetic,
    pcm: Option<Vec<i16>>,
    picture: Option<std::path::PathBuf>,
}

impl MediaBackend for BotMedia {
    fn microphone(&self) -> Result<Box<dyn AudioSource>, MediaError> {
        match &self.pcm {
            Some(pcm) => Ok(Box::new(PlaybackMic::new(pcm.clone()))),
            None => self.synthetic.microphone(),
        }
    }
    fn camera(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        match &self.picture {
            Some(path) => Ok(Box::new(PictureCamera::open(
                path,
                self.synthetic.size.width,
                self.synthetic.size.height,
                self.synthetic.fps,
            )?)),
            None => self.synthetic.camera(),
        }
    }
    fn screen(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        self.synthetic.screen()
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s}: use ms, s, m or h")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration out of range: {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CONVO_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut opts = CallOptions {
        room_id: cli.room.clone(),
        room_password: cli.room_password.clone(),
        audio: false,
        video: false,
        screen: false,
        tone_hz: cli.tone,
        fps: cli.fps,
        video_size: cli.video,
        duration: cli.duration,
        backend: None,
        drop_video_one_in: cli.drop_video_one_in,
        view: cli.view.map(|v| (v.width as u32, v.height as u32)),
        ice_ips: call::ice_ips_from_env(),
        audio_processing: AudioProcessing::OFF,
        video_effects: None,
    };
    let default_on = cli.speech.is_some();
    opts.audio_processing = AudioProcessing {
        echo_cancellation: cli.aec.unwrap_or(default_on),
        noise_suppression: cli.ns.unwrap_or(default_on),
        gain_control: cli.agc.unwrap_or(default_on),
    };
    let pcm = match &cli.speech {
        Some(path) => Some(read_wav(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    if pcm.is_some() || cli.camera_image.is_some() {
        opts.backend = Some(Backend(Arc::new(BotMedia {
            synthetic: Synthetic {
                tone_hz: cli.tone,
                fps: cli.fps,
                size: cli.video,
            },
            pcm,
            picture: cli.camera_image.clone(),
        })));
    }
    let effects = Effects {
        background: parse_background(&cli.background),
        touch_up: cli.touch_up,
    };
    if !effects.is_none() {
        let control = EffectsControl::default();
        control
            .set(effects)
            .map_err(|e| anyhow::anyhow!("--background/--touch-up: {e}"))?;
        opts.video_effects = Some(control);
    }
    for part in cli
        .publish
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part {
            "audio" => opts.audio = true,
            "video" => opts.video = true,
            "screen" => opts.screen = true,
            "none" => {}
            other => bail!("unknown media {other:?}: use audio, video, screen or none"),
        }
    }
    let api = Api::new(&cli.server);
    let tokens = api
        .login(&cli.user, &cli.password)
        .await
        .context("signing in")?;
    let events = cli.events.then(|| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<call::CallEvent>();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Ok(line) = serde_json::to_string(&e) {
                    eprintln!("event {line}");
                }
            }
        });
        tx
    });
    let report = call::run_telling(api.base(), &tokens.access_token, opts, events)
        .await
        .context("the call")?;
    if cli.report == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "participant {} in {}",
            report.participant_id, report.room_id
        );
        for t in &report.tracks {
            println!(
                "{:<48} {:<6} packets {:>6} frames {:>6} fps {:>5.1} freezes {:>3} content {} first {:?} ms latency p50 {:?} p99 {:?}",
                t.track_id,
                t.kind,
                t.packets,
                t.frames_decoded,
                t.fps,
                t.freezes,
                if t.content_ok { "ok" } else { "FAILED" },
                t.join_to_first_frame_ms,
                t.latency_p50_ms,
                t.latency_p99_ms
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3y").is_err());
    }
}
