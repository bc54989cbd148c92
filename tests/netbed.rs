//! The network test bed: a server and bots each in a network namespace of their own, joined
//! by veth pairs (a star around the server's namespace), with bandwidth caps from `tbf` on
//! either end of a link. Every address is inside namespaces the bed creates, so ICE gathers
//! nothing else: the machine's own interfaces are never seen. The test process reaches the
//! server over one more link of its own (registration, rooms). Everything is removed when the
//! bed is dropped, also when a test fails.
//!
//! Needs root (network namespaces) and `ip`/`tc` (iproute2). The server and `convo-bot` run as
//! processes from the target directory: `cargo test --workspace` builds them (a package's
//! binaries are built for its integration tests); alone, `cargo build --workspace --bins`.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use convo_client::api::Api;
use convo_client::stats::BotReport;
use convo_e2e::chromium::{self, Browser, json_lines};
use convo_e2e::{PASSWORD, binary, public_room, register, test_logging, wait_until_serving};

const PORT: u16 = 8080;

/// The TURN server of [`Bed::turn_link`]: where a relay-only bot reaches it (and the API).
const TURN_IP: &str = "10.99.2.1";
const TURN_USER: &str = "convo";
const TURN_PASSWORD: &str = "turn-secret";
/// The media ports of a server started with [`IMPAIRED_ENV`], and the relay's address it
/// announces beside its own.
const MEDIA_PORTS: &str = "40000-40299";
const IMPAIRED_IP: &str = "10.99.4.1";
/// The server's settings for [`Bed::impaired_link`].
pub const IMPAIRED_ENV: [(&str, &str); 3] = [
    ("CONVO_UDP_PORTS", MEDIA_PORTS),
    ("CONVO_PUBLIC_IP", IMPAIRED_IP),
    ("CONVO_PUBLIC_IP_ALONGSIDE", "true"),
];
/// The server's settings that hand the bed's TURN server out.
pub const TURN_ENV: [(&str, &str); 3] = [
    ("CONVO_ICE_SERVERS", "turn:10.99.2.1:3478?transport=udp"),
    ("CONVO_TURN_USERNAME", TURN_USER),
    ("CONVO_TURN_CREDENTIAL", TURN_PASSWORD),
];

/// Runs `cmd args`, panicking with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`run`], inside namespace `ns`.
pub fn run_in(ns: &str, cmd: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, cmd];
    all.extend_from_slice(args);
    run("ip", &all);
}

/// One bot's link to the server.
#[derive(Debug, Clone)]
pub struct Link {
    pub ns: String,
    /// The bot's end (in `ns`) and the server's end (in the server's namespace).
    pub bot_if: String,
    pub srv_if: String,
    pub server_ip: String,
}

impl Link {
    /// The server's HTTP API as seen from this link's namespace.
    pub fn server_url(&self) -> String {
        format!("http://{}:{PORT}", self.server_ip)
    }
}

pub struct Bed {
    id: String,
    pub server_ns: String,
    host_if: String,
    control_ip: String,
    links: Vec<Link>,
    /// Namespaces of the bed's own services (the TURN server).
    others: Vec<String>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    pub api: Api,
}

static BEDS: AtomicU32 = AtomicU32::new(0);

/// A `tbf` cap: `kbit` per second with a queue of about 150 ms; `None` lifts it.
fn tbf_args(dev: &str, kbit: Option<u32>) -> Vec<String> {
    match kbit {
        Some(k) => {
            // The bucket holds at least a full-size packet and ~20 ms of the rate.
            let burst = (k * 1000 / 8 / 50).max(3000);
            format!("qdisc replace dev {dev} root tbf rate {k}kbit burst {burst} latency 150ms")
        }
        None => format!("qdisc del dev {dev} root"),
    }
    .split(' ')
    .map(str::to_string)
    .collect()
}

impl Bed {
    /// The server's namespace with the server running in it.
    pub async fn new() -> Bed {
        Bed::with_server_env(&[]).await
    }

    /// [`Bed::new`], the server started with these extra settings.
    pub async fn with_server_env(env: &[(&str, &str)]) -> Bed {
        let n = BEDS.fetch_add(1, Ordering::Relaxed);
        // Short (interface names have 15 characters at most) and unique per test process.
        let id = format!("{:x}{n}", std::process::id() % 0xFFFF);
        let server_ns = format!("cv{id}s");
        run("ip", &["netns", "add", &server_ns]);
        let dir = tempfile::tempdir().unwrap();
        // From here on the bed cleans up after itself.
        let mut bed = Bed {
            host_if: format!("cv{id}h"),
            control_ip: String::new(),
            id,
            server_ns,
            links: Vec::new(),
            others: Vec::new(),
            children: Vec::new(),
            _dir: dir,
            api: Api::new("http://127.0.0.1:1"),
        };
        run_in(&bed.server_ns, "ip", &["link", "set", "lo", "up"]);
        // The test's own link: 10.97.<k>.0/30, k unique among beds of this machine's tests.
        let k = (std::process::id() * 7 + n) % 250 + 1;
        let (host_ip, srv_ip) = (format!("10.97.{k}.1"), format!("10.97.{k}.2"));
        let peer = format!("cv{}c", bed.id);
        run(
            "ip",
            &[
                "link",
                "add",
                &bed.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &bed.server_ns,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &bed.host_if],
        );
        run("ip", &["link", "set", &bed.host_if, "up"]);
        run_in(
            &bed.server_ns,
            "ip",
            &["addr", "add", &format!("{srv_ip}/30"), "dev", &peer],
        );
        run_in(&bed.server_ns, "ip", &["link", "set", &peer, "up"]);
        bed.control_ip = srv_ip;
        let server = test_logging(
            Command::new("ip")
                .args(["netns", "exec", &bed.server_ns])
                .arg(binary("convo-server"))
                // Its namespace holds only the bed's addresses: ICE may use them all.
                .env_remove("CONVO_ICE_IPS")
                .envs(env.iter().copied())
                .env("CONVO_DATA_DIR", bed._dir.path())
                .env("CONVO_BIND", format!("0.0.0.0:{PORT}")),
        )
        .spawn()
        .expect("start convo-server");
        bed.children.push(server);
        bed.api = Api::new(&format!("http://{}:{PORT}", bed.control_ip));
        wait_until_serving(&bed.api).await;
        bed
    }

    /// A new namespace for a bot, linked to the server's: 10.98.<i>.1 (server) and .2 (bot).
    pub fn link(&mut self) -> Link {
        let i = self.links.len() + 1;
        let ns = format!("cv{}b{i}", self.id);
        let (bot_if, srv_if) = (format!("cv{}b{i}", self.id), format!("cv{}s{i}", self.id));
        let (srv_ip, bot_ip) = (format!("10.98.{i}.1"), format!("10.98.{i}.2"));
        run("ip", &["netns", "add", &ns]);
        let link = Link {
            ns: ns.clone(),
            bot_if: bot_if.clone(),
            srv_if: srv_if.clone(),
            server_ip: srv_ip.clone(),
        };
        self.links.push(link.clone());
        run_in(&ns, "ip", &["link", "set", "lo", "up"]);
        run_in(
            &ns,
            "ip",
            &[
                "link",
                "add",
                &bot_if,
                "type",
                "veth",
                "peer",
                "name",
                &srv_if,
                "netns",
                &self.server_ns,
            ],
        );
        run_in(
            &ns,
            "ip",
            &["addr", "add", &format!("{bot_ip}/24"), "dev", &bot_if],
        );
        run_in(&ns, "ip", &["link", "set", &bot_if, "up"]);
        run_in(
            &self.server_ns,
            "ip",
            &["addr", "add", &format!("{srv_ip}/24"), "dev", &srv_if],
        );
        run_in(&self.server_ns, "ip", &["link", "set", &srv_if, "up"]);
        link
    }

    /// A bot's namespace behind a namespace of the bed's own, `m`, between it and the server:
    /// 10.99.<srv>.1 (server) – 10.99.<srv>.2 (`m`), and 10.99.<bot>.1 (`m`) – 10.99.<bot>.2
    /// (the bot). `m` forwards nothing; the bot reaches the API through a TCP relay in `m`
    /// (socat) at 10.99.<bot>.1, and the media through whatever the caller starts in `m`.
    fn behind(&mut self, tag: char, srv: u8, bot: u8) -> (String, Link) {
        let m = format!("cv{}{tag}", self.id);
        let ns = format!("cv{}{tag}b", self.id);
        run("ip", &["netns", "add", &m]);
        self.others.push(m.clone());
        run("ip", &["netns", "add", &ns]);
        let link = Link {
            ns: ns.clone(),
            bot_if: format!("cv{}{tag}b", self.id),
            srv_if: format!("cv{}{tag}m", self.id),
            server_ip: format!("10.99.{bot}.1"),
        };
        self.links.push(link.clone());
        for n in [&m, &ns] {
            run_in(n, "ip", &["link", "set", "lo", "up"]);
        }
        let (ms, mm) = (
            format!("cv{}{tag}s", self.id),
            format!("cv{}{tag}n", self.id),
        );
        run_in(
            &m,
            "ip",
            &[
                "link",
                "add",
                &mm,
                "type",
                "veth",
                "peer",
                "name",
                &ms,
                "netns",
                &self.server_ns,
            ],
        );
        run_in(
            &m,
            "ip",
            &["addr", "add", &format!("10.99.{srv}.2/24"), "dev", &mm],
        );
        run_in(&m, "ip", &["link", "set", &mm, "up"]);
        run_in(
            &self.server_ns,
            "ip",
            &["addr", "add", &format!("10.99.{srv}.1/24"), "dev", &ms],
        );
        run_in(&self.server_ns, "ip", &["link", "set", &ms, "up"]);
        // Whatever `m` sends elsewhere goes by the server's namespace (which forwards nothing).
        run_in(
            &m,
            "ip",
            &["route", "add", "default", "via", &format!("10.99.{srv}.1")],
        );
        run_in(
            &ns,
            "ip",
            &[
                "link",
                "add",
                &link.bot_if,
                "type",
                "veth",
                "peer",
                "name",
                &link.srv_if,
                "netns",
                &m,
            ],
        );
        run_in(
            &ns,
            "ip",
            &[
                "addr",
                "add",
                &format!("10.99.{bot}.2/24"),
                "dev",
                &link.bot_if,
            ],
        );
        run_in(&ns, "ip", &["link", "set", &link.bot_if, "up"]);
        run_in(
            &m,
            "ip",
            &[
                "addr",
                "add",
                &format!("10.99.{bot}.1/24"),
                "dev",
                &link.srv_if,
            ],
        );
        run_in(&m, "ip", &["link", "set", &link.srv_if, "up"]);
        let api = Command::new("ip")
            .args(["netns", "exec", &m, "socat"])
            .arg(format!(
                "TCP-LISTEN:{PORT},bind=10.99.{bot}.1,fork,reuseaddr"
            ))
            .arg(format!("TCP:10.99.{srv}.1:{PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        self.children.push(api);
        (m, link)
    }

    /// Waits until something listens in namespace `ns` on `proto` (`-u`, `-t`) port `port`.
    fn listening(ns: &str, proto: &str, port: &str) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "ss",
                    "-H",
                    &format!("{proto}ln"),
                    "sport",
                    "=",
                    port,
                ])
                .output()
                .expect("ss");
            if !out.stdout.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "nothing listens on {proto} {port} in {ns} after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// A bot's namespace that reaches nothing but a TURN server (coturn, in the namespace
    /// between it and the server, relaying from 10.99.1.2) and, beside it, the server's API: a
    /// client behind a firewall that lets only its TURN server through. Start the bed with
    /// [`TURN_ENV`] so that the server hands the TURN server out; [`Bed::turn_log`] is
    /// coturn's log.
    pub fn turn_link(&mut self) -> Link {
        let (m, link) = self.behind('t', 1, 2);
        let log = self._dir.path().join("turn.log");
        let turn = Command::new("ip")
            .args([
                "netns",
                "exec",
                &m,
                "turnserver",
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
            ])
            .args([
                "-L",
                TURN_IP,
                "-L",
                "10.99.1.2",
                "-E",
                "10.99.1.2",
                "--listening-port",
                "3478",
            ])
            .args([
                "-a",
                "-r",
                "convo",
                "-u",
                &format!("{TURN_USER}:{TURN_PASSWORD}"),
            ])
            .args(["--min-port", "49152", "--max-port", "49407"])
            .arg("--log-file")
            .arg(&log)
            .args(["--simple-log", "--no-stdout-log", "-v"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver (coturn)");
        self.children.push(turn);
        Bed::listening(&m, "-u", ":3478");
        Bed::listening(&m, "-t", &format!(":{PORT}"));
        link
    }

    /// A bot's namespace whose media to and from the server passes `impair-relay` (in the
    /// namespace between them): `loss` of the packets dropped and the rest delayed by
    /// `delay_ms` ± `jitter_ms`, each way, from `seed`. Start the bed with [`IMPAIRED_ENV`]:
    /// the server then announces the relay's address beside its own.
    pub fn impaired_link(&mut self, delay_ms: u32, jitter_ms: u32, loss: f64, seed: u64) -> Link {
        let (m, link) = self.behind('i', 3, 4);
        let relay = Command::new("ip")
            .args(["netns", "exec", &m])
            .arg(binary("impair-relay"))
            .args([
                "--listen",
                IMPAIRED_IP,
                "--server",
                "10.99.3.1",
                "--ports",
                MEDIA_PORTS,
            ])
            .args([
                "--delay-ms",
                &delay_ms.to_string(),
                "--jitter-ms",
                &jitter_ms.to_string(),
            ])
            .args(["--loss", &loss.to_string(), "--seed", &seed.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start impair-relay");
        self.children.push(relay);
        let last = MEDIA_PORTS.rsplit('-').next().expect("a range");
        Bed::listening(&m, "-u", &format!(":{last}"));
        Bed::listening(&m, "-t", &format!(":{PORT}"));
        link
    }

    /// coturn's log so far (see [`Bed::turn_link`]).
    pub fn turn_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("turn.log")).unwrap_or_default()
    }

    /// The namespaces it made.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = self.links.iter().map(|l| l.ns.clone()).collect();
        all.push(self.server_ns.clone());
        all.extend(self.others.iter().cloned());
        all
    }

    /// Caps what the server sends the bot (its downlink); `None` lifts the cap.
    pub fn cap_down(&self, link: &Link, kbit: Option<u32>) {
        let args = tbf_args(&link.srv_if, kbit);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(&self.server_ns, "tc", &args);
    }

    /// Caps what the bot sends (its uplink); `None` lifts the cap.
    pub fn cap_up(&self, link: &Link, kbit: Option<u32>) {
        let args = tbf_args(&link.bot_if, kbit);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(&link.ns, "tc", &args);
    }

    /// A user with a signed-in account.
    pub async fn user(&self, name: &str) {
        register(&self.api, name).await;
    }

    /// A fresh access token of `user`'s.
    pub async fn token(&self, user: &str) -> String {
        self.api.login(user, PASSWORD).await.unwrap().access_token
    }

    /// A public room of `owner`'s, without a waiting room.
    pub async fn room(&self, owner: &str) -> String {
        public_room(&self.api, &self.token(owner).await, "Network").await
    }

    /// Starts `convo-bot` in `link`'s namespace as `user`; its report comes from
    /// [`Bot::report`].
    pub fn bot(&mut self, link: &Link, user: &str, room: &str, args: &[&str]) -> Bot {
        let child = Command::new("ip")
            .args(["netns", "exec", &link.ns])
            .arg(binary("convo-bot"))
            .env_remove("CONVO_ICE_IPS")
            .args([
                "--server",
                &link.server_url(),
                "--user",
                user,
                "--room",
                room,
            ])
            .args(args)
            .env("CONVO_BOT_PASSWORD", PASSWORD)
            .env(
                "CONVO_LOG",
                std::env::var("CONVO_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start convo-bot");
        let mut child = child;
        // Its log goes on to ours; `event` lines (with `--events`) come to `Bot::event`.
        let events = json_lines(
            child.stderr.take().expect("piped"),
            |line| line.strip_prefix("event "),
            |line| eprintln!("{line}"),
        );
        Bot {
            child: Some(child),
            events,
            seen: Vec::new(),
        }
    }

    /// Gives `link`'s bot a new address (`10.98.<i>.<host>`) in place of its own, as a
    /// network change would (its connections on the old one are cut).
    pub fn renumber(&self, link: &Link, host: u8) {
        let net = link.server_ip.trim_end_matches(".1");
        // The old one goes first (deleting a primary address takes the subnet's secondary
        // ones with it).
        for ip in self.addresses(link) {
            run_in(&link.ns, "ip", &["addr", "del", &ip, "dev", &link.bot_if]);
        }
        run_in(
            &link.ns,
            "ip",
            &[
                "addr",
                "add",
                &format!("{net}.{host}/24"),
                "dev",
                &link.bot_if,
            ],
        );
    }

    /// `link`'s bot's addresses (with their prefix length).
    fn addresses(&self, link: &Link) -> Vec<String> {
        let out = Command::new("ip")
            .args([
                "-n",
                &link.ns,
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                &link.bot_if,
            ])
            .output()
            .expect("ip addr show");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next().map(str::to_string)
            })
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.links.iter().map(|l| &l.ns).chain(&self.others) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.server_ns])
            .status();
    }
}

/// A running `convo-bot`.
pub struct Bot {
    child: Option<Child>,
    /// Its call's events (`--events`), and those read so far.
    events: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
}

impl Bot {
    /// Waits for an event (`--events`) that `matches`; fails the test after `secs` s.
    pub async fn event(
        &mut self,
        secs: u64,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let e = tokio::time::timeout_at(end, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {secs} s; saw {:#?}", self.seen))
                .unwrap_or_else(|| panic!("the bot ended before {what}; saw {:#?}", self.seen));
            self.seen.push(e.clone());
            if matches(&e) {
                return e;
            }
        }
    }

    /// Every event so far, the ones not read yet included.
    pub fn events(&mut self) -> &[serde_json::Value] {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }

    /// Waits for the bot to finish its call and reads its report.
    pub async fn report(self) -> BotReport {
        self.finish().await.0
    }

    /// [`Bot::report`], and every event the bot told.
    pub async fn finish(mut self) -> (BotReport, Vec<serde_json::Value>) {
        let child = self.child.take().expect("not read yet");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .expect("convo-bot ran");
        assert!(
            out.status.success(),
            "convo-bot failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report = serde_json::from_slice(&out.stdout).expect("a JSON report");
        // Its stderr is closed: every event is in the channel.
        self.events();
        (report, std::mem::take(&mut self.seen))
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Bed {
    /// Opens `page` (a file of `tests/interop/`, its `#fragment` included) in headless Chromium
    /// (Debian's package) in `link`'s namespace, with a fake camera and microphone at 30 fps.
    /// What the page says with `whip-result <json>` on its console comes to
    /// [`Browser::said`].
    pub fn chromium(&self, link: &Link, page: &str) -> Browser {
        chromium::launch(
            &["ip", "netns", "exec", &link.ns],
            page,
            &["--headless=new", "--disable-gpu"],
        )
    }
}
