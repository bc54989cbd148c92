//! Debian's Chromium driving a page of `tests/interop/`: started in a process group of its own
//! (its helper processes go with it), with a fake camera and microphone, reporting through its
//! console. Used by the network bed (a WHIP publisher in a namespace) and by `desktop-bench`
//! (the same call as the app, in a browser).

use std::process::{Child, Command, Stdio};

/// What a page says on its console as `whip-result <json>`.
const SAY: &str = "\"whip-result ";

/// A running Chromium; stopped with its helpers when dropped.
pub struct Browser {
    child: Child,
    said: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    _profile: tempfile::TempDir,
}

/// Opens `page` (a file of `tests/interop/`, its `#fragment` included) in Chromium, the
/// command prefixed by `wrapper` (e.g. `ip netns exec <ns>`), with `extra` flags (e.g.
/// `--headless=new`). The fake camera and microphone run at 30 fps. What the page says with
/// `whip-result <json>` on its console comes to [`Browser::said`].
pub fn launch(wrapper: &[&str], page: &str, extra: &[&str]) -> Browser {
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().expect("a profile directory");
    let url = format!("file://{}/interop/{page}", env!("CARGO_MANIFEST_DIR"));
    let (program, prefix) = match wrapper.split_first() {
        Some((p, rest)) => (*p, [rest, &["chromium"]].concat()),
        None => ("chromium", Vec::new()),
    };
    let mut child = Command::new(program)
        .args(prefix)
        .args([
            // Root in a test: no setuid sandbox to be had.
            "--no-sandbox",
            "--no-first-run",
            "--use-fake-device-for-media-stream=fps=30",
            "--use-fake-ui-for-media-stream",
            // A file:// page posts to the server: no CORS between them.
            "--disable-web-security",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: the browser's helpers go with it.
        .process_group(0)
        .spawn()
        .expect("start chromium (apt-get install chromium)");
    let said = json_lines(
        child.stderr.take().expect("piped"),
        // `[…:INFO:CONSOLE:12] "whip-result {…}", source: file:///… (12)`
        |line| {
            let (_, rest) = line.split_once(SAY)?;
            Some(rest.rsplit_once("\", source:").map_or(rest, |(j, _)| j))
        },
        |_| {},
    );
    Browser {
        child,
        said,
        _profile: profile,
    }
}

impl Browser {
    /// The next thing the page said; fails after `secs` s.
    pub async fn said(&mut self, secs: u64, what: &str) -> serde_json::Value {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.said.recv())
            .await
            .unwrap_or_else(|_| panic!("the page said nothing ({what}) within {secs} s"))
            .unwrap_or_else(|| panic!("chromium ended before the page said {what}"))
    }

    /// The browser's process id, which is also its process group's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Reads a child's stderr line by line on a thread of its own: the JSON that `pick` finds in
/// a line is parsed and sent on; every other line goes to `rest`.
pub fn json_lines(
    stderr: std::process::ChildStderr,
    pick: impl Fn(&str) -> Option<&str> + Send + 'static,
    rest: impl Fn(&str) + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            match pick(&line) {
                Some(json) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                        let _ = tx.send(v);
                    }
                }
                None => rest(&line),
            }
        }
    });
    rx
}
