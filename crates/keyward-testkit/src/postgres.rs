//! Where test PostgreSQL comes from, and throwaway clusters for tests that
//! must stop a database (never the machine's shared one).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The admin URL tests create their databases with, or `None` (skipped).
pub fn admin_url() -> Option<String> {
    static ADMIN: OnceLock<Option<String>> = OnceLock::new();
    ADMIN
        .get_or_init(|| {
            if let Ok(url) = std::env::var("KEYWARD_TEST_DATABASE_URL")
                && !url.is_empty()
            {
                return Some(url);
            }
            match ThrowawayCluster::start() {
                Ok(cluster) => {
                    let url = cluster.admin_url();
                    // Lives for the whole test process; a watcher stops it
                    // when the process exits.
                    std::mem::forget(cluster);
                    Some(url)
                }
                Err(reason) => {
                    if super::running_in_ci() {
                        panic!(
                            "CI is set but there is no PostgreSQL for tests: set KEYWARD_TEST_DATABASE_URL ({reason})"
                        );
                    }
                    report_skip(&format!(
                        "PostgreSQL tests: KEYWARD_TEST_DATABASE_URL is not set and no \
                         throwaway cluster could be started ({reason})"
                    ));
                    None
                }
            }
        })
        .clone()
}

/// Says loudly that tests were skipped. Written to the process's stderr
/// directly: `eprintln!` inside a passing test is captured and never shown.
pub fn report_skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {what} ***\n");
}

/// `admin` with its database replaced by `database`.
pub fn with_database(admin: &str, database: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin, None),
    };
    // postgres://user@host:port/db -> keep everything up to the path.
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let root = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// The newest PostgreSQL binaries on this machine.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// PostgreSQL refuses to run as root; run its tools as `postgres` then.
fn pg_command(bin: &Path, tool: &str) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        command
    } else {
        Command::new(bin.join(tool))
    }
}

/// A PostgreSQL cluster of this test process's own, on a free port.
pub struct ThrowawayCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    dir: PathBuf,
}

impl ThrowawayCluster {
    /// A cluster for `test`, which must stop a database; `None` (reported
    /// loudly as skipped) when none can be started, except in CI, where
    /// that fails the test.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        match Self::start() {
            Ok(cluster) => Some(cluster),
            Err(reason) => {
                if super::running_in_ci() {
                    panic!(
                        "{test}: CI is set but no throwaway PostgreSQL could be started: {reason}"
                    );
                }
                report_skip(&format!("{test}: {reason}"));
                None
            }
        }
    }

    pub fn start() -> Result<Self, String> {
        let bin = postgres_bin().ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        let dir = std::env::temp_dir().join(format!(
            "keyward-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("cannot chown the cluster directory to postgres".into());
            }
        }
        let data = dir.join("data");
        let output = pg_command(&bin, "initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let cluster = Self {
            log: dir.join("postgres.log"),
            port: super::free_port("127.0.0.1"),
            bin,
            data,
            dir,
        };
        cluster.start_again()?;
        cluster.stop_when_this_process_exits();
        Ok(cluster)
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (or restarts) the server on the same port and data.
    pub fn start_again(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let output = pg_command(&self.bin, "pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-l"])
            .arg(&self.log)
            .args(["-o", &options, "-w", "-t", "30", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "pg_ctl start failed: {} {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Stops the server at once, as a crash would.
    pub fn stop(&self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
    }

    /// A detached watcher that stops the cluster and removes its files once
    /// this test process is gone, however it ends.
    fn stop_when_this_process_exits(&self) {
        let runuser = if running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {runuser}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data.display(),
            dir = self.dir.display(),
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
