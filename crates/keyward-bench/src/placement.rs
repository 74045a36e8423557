//! Where the processes run while the hot path is compared with the floor.
//! With at least two CPUs and `taskset` (util-linux), the servers under test
//! share the last CPU and the load generator (this process, or h2load) gets
//! the others: a server is then measured as a caller on another machine sees
//! it, not in a fight with its own load generator over both cores, where
//! whichever side the scheduler favours moves the figure. Pinning is undone
//! after the comparison, so the other sections run as they always have.

use std::process::Stdio;

use tokio::process::Command;

use super::BenchError;

pub struct Placement {
    /// CPU list for the load generator, as taskset reads it (`0` or `0-2`).
    generator: String,
    /// The CPU the servers under test share.
    server: usize,
    /// Every CPU: what pinning is undone to.
    all: String,
}

impl Placement {
    /// `None` on a one-CPU machine, without `taskset`, or when not wanted.
    pub async fn decide(wanted: bool) -> Option<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if !wanted || cpus < 2 {
            return None;
        }
        let runnable = Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        runnable.then(|| Self {
            generator: cpu_list(0, cpus - 2),
            server: cpus - 1,
            all: cpu_list(0, cpus - 1),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "servers on CPU {}, load generator on CPU {} (taskset)",
            self.server, self.generator
        )
    }

    /// Moves every thread of the servers and of this process to its place.
    pub async fn pin(&self, servers: &[u32]) -> Result<(), BenchError> {
        for &pid in servers {
            set_affinity(pid, &self.server.to_string()).await?;
        }
        set_affinity(std::process::id(), &self.generator).await
    }

    /// Lets every thread of the servers and of this process run anywhere.
    pub async fn unpin(&self, servers: &[u32]) -> Result<(), BenchError> {
        for &pid in servers {
            set_affinity(pid, &self.all).await?;
        }
        set_affinity(std::process::id(), &self.all).await
    }

    /// `program` as a command that runs on the load generator's CPUs.
    pub fn generator_command(&self, program: &str) -> Command {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(&self.generator).arg(program);
        command
    }
}

fn cpu_list(first: usize, last: usize) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// `taskset -a -p -c LIST PID`: every thread of `pid` (threads started later
/// inherit it from their parent).
async fn set_affinity(pid: u32, cpus: &str) -> Result<(), BenchError> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "taskset could not move process {pid} to CPU {cpus}"
        )))
    }
}
