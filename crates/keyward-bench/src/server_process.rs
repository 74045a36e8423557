//! Runs keyward itself, as a separate process (`keyward serve`), so the
//! benchmark measures the real server and can read its resident memory
//! without counting the load generator's; and the floor (`keyward-floor`)
//! the same way.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::BenchError;

pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The key-management HTTP API (`--http-listen`).
    pub http_addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `keyward serve` on a free loopback port and waits until its
    /// health check answers SERVING.
    pub async fn start(
        binary: &Path,
        config: &Path,
        database_url: &str,
    ) -> Result<Self, BenchError> {
        let port = keyward_testkit::free_port("127.0.0.1");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let http_addr: SocketAddr =
            ([127, 0, 0, 1], keyward_testkit::free_port("127.0.0.1")).into();
        let child = Command::new(binary)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--http-listen")
            .arg(http_addr.to_string())
            .arg("--database-url")
            .arg(database_url)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let server = Self {
            child,
            addr,
            http_addr,
        };
        server.wait_until_serving().await?;
        Ok(server)
    }

    /// Starts the floor (`keyward-floor`, a bare tonic Health server) on a
    /// free loopback port and waits until it answers SERVING.
    pub async fn start_floor(binary: &Path) -> Result<Self, BenchError> {
        let addr: SocketAddr = ([127, 0, 0, 1], keyward_testkit::free_port("127.0.0.1")).into();
        let child = Command::new(binary)
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let server = Self {
            child,
            addr,
            // The floor serves no HTTP API; nothing connects here.
            http_addr: addr,
        };
        server.wait_until_serving().await?;
        Ok(server)
    }

    /// The process id (for CPU placement).
    pub fn pid(&self) -> Result<u32, BenchError> {
        self.child
            .id()
            .ok_or_else(|| BenchError::Setup("server exited".into()))
    }

    async fn wait_until_serving(&self) -> Result<(), BenchError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        for _ in 0..200 {
            if let Ok(channel) = connect(self.addr).await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if let Ok(reply) = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    && reply.into_inner().status() == ServingStatus::Serving
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(BenchError::Setup(format!(
            "the server on {} did not start",
            self.addr
        )))
    }

    /// Resident memory of the server process, from /proc.
    pub fn resident_bytes(&self) -> Result<u64, BenchError> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or_else(|| BenchError::Setup("no VmRSS in /proc status".into()))?;
        Ok(kib * 1024)
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) -> Result<(), BenchError> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        // Generous: at shutdown the server writes every pending last-use
        // time, which after a million-key run is a million rows.
        match tokio::time::timeout(Duration::from_secs(180), self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                Err(BenchError::Setup("server did not stop within 180 s".into()))
            }
        }
    }
}

pub async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .tcp_nodelay(true)
        .connect()
        .await
}
