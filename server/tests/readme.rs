//! The README's curl walk-through, run as written against a real server (SQLite).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestEnv};

fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("end marker");
    readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_works_as_written() {
    let script = walkthrough();
    assert!(script.contains("B=http://127.0.0.1:8080"));
    let env = TestEnv::new(Backend::Sqlite).await;
    let srv = env.start().await;
    // Only the address differs from the README: the test server listens on a free port.
    let script = script.replace("B=http://127.0.0.1:8080", &format!("B={}", srv.base));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .output()
            .expect("bash runs (and curl and jq are installed)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walk-through failed:\n{stdout}\n{stderr}"
    );
    for expected in [
        r#""username": "alice""#,
        r#""username": "bob""#,
        r#""code": "room_not_found""#,
        r#""participant_count": 1"#,
        r#""my_role": "member""#,
        r#""locked": true"#,
        r#""count": 1"#,
        "204",
        r#""code": "unauthenticated""#,
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("internal"), "{stdout}");
    srv.stop().await;
}
