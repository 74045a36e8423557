//! Redis for the shared-limits tests: the machine's shared server (each test
//! isolated by its own key prefix), or a throwaway `redis-server` on a free
//! port that a test may stop and start again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward::config::Config;
use keyward::shared_limits::{LimitsBackend, OnBackendError, RedisUrl};

use crate::running_in_ci;

/// The shared Redis the tests use: `KEYWARD_TEST_REDIS_URL`, else
/// 127.0.0.1:6379.
fn shared_address() -> (String, String) {
    match std::env::var("KEYWARD_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let address = url
                .trim_start_matches("redis://")
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            (url, address)
        }
        _ => (
            "redis://127.0.0.1:6379".to_owned(),
            "127.0.0.1:6379".to_owned(),
        ),
    }
}

/// Whether a Redis answers PING at `address` (host:port).
pub fn answers_ping(address: &str) -> bool {
    let Ok(address) = address.parse() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// The shared Redis's URL, or `None` (reported) when nothing answers there;
/// in CI a missing Redis fails the test instead.
pub fn shared_redis_or_skip(test: &str) -> Option<String> {
    let (url, address) = shared_address();
    if answers_ping(&address) {
        return Some(url);
    }
    assert!(
        !running_in_ci(),
        "{test}: no Redis answers at {address} (.ci/run starts one)"
    );
    eprintln!("SKIPPED {test}: no Redis answers at {address}");
    None
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "kwtest:{test}:{}:{nanos}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `config` with limits shared through Redis at `url`, under `prefix`.
/// Calls may take up to 5 s: on a loaded test machine the product's 100 ms
/// would turn slowness into UNAVAILABLE (tests of an outage set their own).
pub fn with_redis_limits(
    mut config: Config,
    url: &str,
    prefix: &str,
    on_error: OnBackendError,
) -> Config {
    config.limits.backend = LimitsBackend::Redis;
    config.limits.redis_url = Some(RedisUrl::parse(url).expect("a valid Redis URL"));
    config.limits.key_prefix = prefix.to_owned();
    config.limits.on_backend_error = on_error;
    config.limits.timeout = Duration::from_secs(5);
    config
}

/// A `redis-server` of the test's own on a free port, without persistence.
/// Stopped when dropped.
pub struct ThrowawayRedis {
    port: u16,
    child: Mutex<Option<Child>>,
}

impl ThrowawayRedis {
    /// Starts one, or `None` (reported) when `redis-server` is not
    /// installed; in CI that fails the test instead.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let redis = Self {
            port: crate::free_port("127.0.0.1"),
            child: Mutex::new(None),
        };
        match redis.start_again() {
            Ok(()) => Some(redis),
            Err(error) => {
                assert!(!running_in_ci(), "{test}: {error}");
                eprintln!("SKIPPED {test}: {error}");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port, empty, and waits until it
    /// answers.
    pub fn start_again(&self) -> Result<(), String> {
        let mut child = self.child.lock().expect("not poisoned");
        if child.is_some() {
            return Ok(());
        }
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot run redis-server: {error}"))?;
        *child = Some(spawned);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if answers_ping(&self.address()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server on port {} never answered", self.port))
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("not poisoned").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
