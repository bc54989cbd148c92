//! Sound devices through cpal (feature `devices`): the microphone as an [`AudioSource`] and
//! playout of the [`Mixer`] to a speaker, at whatever rate and channel count the device wants
//! (converted to and from the engine's 48 kHz mono). cpal's streams are not `Send`, so each
//! lives on a thread of its own; samples cross on channels.
//!
//! Device ids are the names the host gives them (stable across runs and hot-plug); `None`
//! means the system default. [`list`] reads the current lists afresh, so a refresh after a
//! device is plugged in or out sees it.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use serde::Serialize;

use crate::media::{AUDIO_FRAME, AudioSource, MediaError, SAMPLE_RATE};
use crate::mixer::Mixer;
use crate::resample::Resampler;

pub use crate::media::DeviceInfo;

/// The sound devices present now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoundDevices {
    pub inputs: Vec<DeviceInfo>,
    pub outputs: Vec<DeviceInfo>,
}

fn unavailable(device: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Unavailable {
        device: device.into(),
        reason: e.to_string(),
    }
}

/// Lists microphones and speakers (afresh each time).
pub fn list() -> SoundDevices {
    let host = cpal::default_host();
    let default_in = host.default_input_device().and_then(|d| d.name().ok());
    let default_out = host.default_output_device().and_then(|d| d.name().ok());
    let collect = |devices: Option<Vec<cpal::Device>>, default: &Option<String>| {
        let mut out: Vec<DeviceInfo> = devices
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.name().ok())
            .map(|name| DeviceInfo {
                id: name.clone(),
                default: default.as_deref() == Some(name.as_str()),
                name,
            })
            .collect();
        out.dedup_by(|a, b| a.id == b.id);
        out
    };
    SoundDevices {
        inputs: collect(
            host.input_devices().ok().map(Iterator::collect),
            &default_in,
        ),
        outputs: collect(
            host.output_devices().ok().map(Iterator::collect),
            &default_out,
        ),
    }
}

fn find(input: bool, id: Option<&str>) -> Result<cpal::Device, MediaError> {
    let host = cpal::default_host();
    let what = if input { "microphone" } else { "speaker" };
    match id {
        None => if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        }
        .ok_or_else(|| unavailable(what, "no default device")),
        Some(id) => {
            let devices = if input {
                host.input_devices()
            } else {
                host.output_devices()
            }
            .map_err(|e| unavailable(what, e))?;
            devices
                .into_iter()
                .find(|d| d.name().is_ok_and(|n| n == id))
                .ok_or_else(|| unavailable(what, format!("{id} is not connected")))
        }
    }
}

/// A microphone: 20 ms mono frames at 48 kHz.
pub struct CpalMic {
    frames: mpsc::Receiver<Vec<i16>>,
    name: String,
    _stop: StopOnDrop,
}

struct StopOnDrop(mpsc::Sender<()>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Opens a stream on a thread of its own (cpal streams are not `Send`) and keeps it playing
/// there until the returned guard is dropped; the device's name, or why it did not open.
fn on_stream_thread(
    what: &'static str,
    open: impl FnOnce() -> Result<(cpal::Stream, String), MediaError> + Send + 'static,
) -> Result<(String, StopOnDrop), MediaError> {
    let (ready_tx, ready) = mpsc::channel::<Result<String, MediaError>>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || match open() {
        Ok((stream, name)) => {
            let _ = ready_tx.send(Ok(name));
            let _ = stop_rx.recv();
            drop(stream);
        }
        Err(e) => {
            let _ = ready_tx.send(Err(e));
        }
    });
    let name = ready
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| unavailable(what, "the device did not open"))??;
    Ok((name, StopOnDrop(stop_tx)))
}

/// The device's default configuration at 48 kHz if it offers that (same channels and sample
/// format): the sound server's resampler is better than the linear one here, and an echo
/// path through two linear resamplers is one the echo canceller cannot fully model.
fn at_48k(
    default: cpal::SupportedStreamConfig,
    supported: Option<Vec<cpal::SupportedStreamConfigRange>>,
) -> cpal::SupportedStreamConfig {
    if default.sample_rate().0 == SAMPLE_RATE {
        return default;
    }
    supported
        .unwrap_or_default()
        .into_iter()
        .find(|r| {
            r.channels() == default.channels()
                && r.sample_format() == default.sample_format()
                && r.min_sample_rate().0 <= SAMPLE_RATE
                && r.max_sample_rate().0 >= SAMPLE_RATE
        })
        .map_or(default, |r| {
            r.with_sample_rate(cpal::SampleRate(SAMPLE_RATE))
        })
}

impl CpalMic {
    /// Opens a microphone (`None`: the default one).
    pub fn open(id: Option<&str>) -> Result<CpalMic, MediaError> {
        let (frames_tx, frames) = mpsc::sync_channel::<Vec<i16>>(50);
        let id = id.map(str::to_string);
        let (name, stop) = on_stream_thread("microphone", move || {
            let device = find(true, id.as_deref())?;
            let name = device.name().unwrap_or_default();
            let config = at_48k(
                device
                    .default_input_config()
                    .map_err(|e| unavailable("microphone", e))?,
                device.supported_input_configs().ok().map(|c| c.collect()),
            );
            let channels = usize::from(config.channels().max(1));
            let mut resampler = Resampler::new(config.sample_rate().0, SAMPLE_RATE);
            let mut pending: Vec<f32> = Vec::new();
            let mut mono: Vec<f32> = Vec::new();
            let mut deliver = move |data: &[f32]| {
                mono.clear();
                mono.extend(
                    data.chunks(channels)
                        .map(|c| c.iter().sum::<f32>() / channels as f32),
                );
                resampler.run(&mono, &mut pending);
                while pending.len() >= AUDIO_FRAME {
                    let frame: Vec<i16> = pending
                        .drain(..AUDIO_FRAME)
                        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
                        .collect();
                    // A full queue (nobody reading) drops the frame rather than blocking
                    // the audio thread.
                    let _ = frames_tx.try_send(frame);
                }
            };
            let err = |e: cpal::StreamError| tracing::warn!(error = %e, "microphone stream");
            let stream = match config.sample_format() {
                cpal::SampleFormat::F32 => device.build_input_stream(
                    &config.into(),
                    move |d: &[f32], _: &_| deliver(d),
                    err,
                    None,
                ),
                cpal::SampleFormat::I16 => {
                    let mut buf = Vec::new();
                    device.build_input_stream(
                        &config.into(),
                        move |d: &[i16], _: &_| {
                            buf.clear();
                            buf.extend(d.iter().map(|s| f32::from(*s) / 32768.0));
                            deliver(&buf);
                        },
                        err,
                        None,
                    )
                }
                other => {
                    return Err(unavailable(
                        "microphone",
                        format!("unsupported sample format {other:?}"),
                    ));
                }
            }
            .map_err(|e| unavailable("microphone", e))?;
            stream.play().map_err(|e| unavailable("microphone", e))?;
            Ok((stream, name))
        })?;
        Ok(CpalMic {
            frames,
            name,
            _stop: stop,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AudioSource for CpalMic {
    fn read(&mut self) -> Result<Vec<i16>, MediaError> {
        self.frames
            .recv_timeout(Duration::from_secs(2))
            .map_err(|_| MediaError::Stopped {
                device: self.name.clone(),
                reason: "no audio from the microphone".into(),
            })
    }
}

/// Plays the mixer to a speaker until dropped.
pub struct CpalSpeaker {
    name: String,
    _stop: StopOnDrop,
}

impl CpalSpeaker {
    pub fn open(id: Option<&str>, mixer: Mixer) -> Result<CpalSpeaker, MediaError> {
        let id = id.map(str::to_string);
        let (name, stop) = on_stream_thread("speaker", move || {
            let device = find(false, id.as_deref())?;
            let name = device.name().unwrap_or_default();
            let config = at_48k(
                device
                    .default_output_config()
                    .map_err(|e| unavailable("speaker", e))?,
                device.supported_output_configs().ok().map(|c| c.collect()),
            );
            let channels = usize::from(config.channels().max(1));
            let rate = config.sample_rate().0;
            // Mixer samples at 48 kHz, resampled to the device's rate, kept between calls.
            let state = Arc::new(Mutex::new((
                Resampler::new(SAMPLE_RATE, rate),
                Vec::<f32>::new(),
                vec![0i16; 0],
            )));
            let fill = move |out: &mut [f32]| {
                let frames = out.len() / channels;
                let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                let (resampler, ready, pcm) = &mut *st;
                while ready.len() < frames {
                    pcm.resize(AUDIO_FRAME / 4, 0);
                    mixer.fill(pcm);
                    let f: Vec<f32> = pcm.iter().map(|s| f32::from(*s) / 32768.0).collect();
                    resampler.run(&f, ready);
                }
                for (i, s) in ready.drain(..frames).enumerate() {
                    out[i * channels..(i + 1) * channels].fill(s);
                }
            };
            let err = |e: cpal::StreamError| tracing::warn!(error = %e, "speaker stream");
            let stream = match config.sample_format() {
                cpal::SampleFormat::F32 => device.build_output_stream(
                    &config.into(),
                    move |d: &mut [f32], _: &_| fill(d),
                    err,
                    None,
                ),
                cpal::SampleFormat::I16 => {
                    let mut buf = Vec::new();
                    device.build_output_stream(
                        &config.into(),
                        move |d: &mut [i16], _: &_| {
                            buf.resize(d.len(), 0.0);
                            fill(&mut buf);
                            for (o, s) in d.iter_mut().zip(&buf) {
                                *o = (s.clamp(-1.0, 1.0) * 32767.0) as i16;
                            }
                        },
                        err,
                        None,
                    )
                }
                other => {
                    return Err(unavailable(
                        "speaker",
                        format!("unsupported sample format {other:?}"),
                    ));
                }
            }
            .map_err(|e| unavailable("speaker", e))?;
            stream.play().map_err(|e| unavailable("speaker", e))?;
            Ok((stream, name))
        })?;
        Ok(CpalSpeaker { name, _stop: stop })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}
