//! `apm-bench`: what the microphone's processing costs — time per 10 ms frame with each part
//! on alone and all together, on 30 s of espeak-ng speech with an echo and fan noise, and the
//! share of one core that is. Run a release build:
//! `cargo run --release -p convo-client --bin apm-bench`.

use std::time::Instant;

use convo_client::apm::signals::{self, speech};
use convo_client::apm::{AudioProcessing, process_signals};

fn main() -> anyhow::Result<()> {
    let far = speech(
        "Good morning everyone. Let us start with the budget for the next quarter, then the \
         hiring plan, and we finish with questions from the team.",
        "en-us",
    )?;
    let n = 30 * 48_000;
    let far = signals::repeat_to(&far, 300, n);
    let noise = signals::to_i16(&signals::scale_to_dbfs(
        &signals::fan_and_keys(n, 3),
        &[],
        -45.0,
    ));
    let mic = signals::mix(&signals::echo_of(&far, 60, -10.0), &noise);
    let frames = (n / 480) as f64;
    println!(
        "{:<28} {:>14} {:>14}",
        "processing", "µs / 10 ms", "% of a core"
    );
    for (name, s) in [
        ("none (voice activity only)", AudioProcessing::OFF),
        (
            "echo cancellation",
            AudioProcessing {
                echo_cancellation: true,
                ..AudioProcessing::OFF
            },
        ),
        (
            "noise suppression",
            AudioProcessing {
                noise_suppression: true,
                ..AudioProcessing::OFF
            },
        ),
        (
            "gain control",
            AudioProcessing {
                gain_control: true,
                ..AudioProcessing::OFF
            },
        ),
        ("all (the app's default)", AudioProcessing::default()),
    ] {
        let start = Instant::now();
        process_signals(s, &far, &mic)?;
        let per_frame = start.elapsed().as_secs_f64() / frames;
        println!(
            "{name:<28} {:>14.1} {:>14.2}",
            per_frame * 1e6,
            per_frame / 0.010 * 100.0
        );
    }
    Ok(())
}
