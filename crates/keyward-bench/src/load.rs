//! Load drivers: closed loop (a fixed number of callers, each waiting for its
//! reply before the next call) and open loop (calls started on a fixed
//! schedule, whatever the replies do). Latencies go into an HDR histogram;
//! only calls that succeeded are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadStats {
    pub succeeded: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl LoadStats {
    pub fn throughput(&self) -> f64 {
        self.succeeded as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p50_us(&self) -> u64 {
        self.latency_us.value_at_quantile(0.50)
    }

    pub fn p99_us(&self) -> u64 {
        self.latency_us.value_at_quantile(0.99)
    }

    pub fn p999_us(&self) -> u64 {
        self.latency_us.value_at_quantile(0.999)
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `callers` tasks call `call(i)` back to back for `duration`; `i` counts
/// up across all callers (use it to spread calls over keys).
pub async fn closed_loop<F, Fut>(callers: usize, duration: Duration, call: F) -> LoadStats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let call = Arc::clone(&call);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut histogram = new_histogram();
                let mut failed = 0;
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    if call(i).await {
                        let _ = histogram.record(micros(sent.elapsed()));
                    } else {
                        failed += 1;
                    }
                }
                (histogram, failed)
            })
        })
        .collect();
    collect(tasks, started).await
}

/// Calls `call(i)` for every `i` in `0..count` with at most `callers` in
/// flight (for setup phases measured as a rate: CreateKey, first lookups).
pub async fn closed_loop_count<F, Fut>(callers: usize, count: u64, call: F) -> LoadStats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let call = Arc::clone(&call);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut histogram = new_histogram();
                let mut failed = 0;
                loop {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let sent = Instant::now();
                    if call(i).await {
                        let _ = histogram.record(micros(sent.elapsed()));
                    } else {
                        failed += 1;
                    }
                }
                (histogram, failed)
            })
        })
        .collect();
    collect(tasks, started).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>,
    started: Instant,
) -> LoadStats {
    let mut latency_us = new_histogram();
    let mut failed = 0;
    for task in tasks {
        let (histogram, task_failed) = task.await.expect("load task");
        latency_us.add(histogram).expect("same bounds");
        failed += task_failed;
    }
    LoadStats {
        succeeded: latency_us.len(),
        failed,
        elapsed: started.elapsed(),
        latency_us,
    }
}

/// Starts `rate` calls per second for `duration`, each in its own task,
/// whatever earlier calls are doing. A dispatcher thread starts them on
/// schedule: tokio's timers tick once a millisecond, which at 10,000 calls a
/// second would start them in bursts of ten that queue behind each other,
/// so the thread sleeps between calls instead (the kernel's timer slack,
/// about 50 µs, bounds how early or late a call starts). Latency runs from
/// each call's actual start.
pub async fn open_loop<F, Fut>(rate: u64, duration: Duration, call: F) -> LoadStats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let call = Arc::new(call);
    let (results, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let total = rate * duration.as_millis() as u64 / 1000;
    let started = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let dispatcher = std::thread::spawn(move || {
        let mut sent = 0u64;
        while sent < total {
            let due = (rate as u128 * started.elapsed().as_micros() / 1_000_000) as u64;
            while sent < due.min(total) {
                let call = Arc::clone(&call);
                let results = results.clone();
                let i = sent;
                runtime.spawn(async move {
                    let begun = Instant::now();
                    let ok = call(i).await;
                    let _ = results.send(ok.then(|| micros(begun.elapsed())));
                });
                sent += 1;
            }
            std::thread::sleep(interval);
        }
    });
    // The dispatcher holds the last sender; the loop below ends once it and
    // every call are done.
    let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
    let mut latency_us = new_histogram();
    let mut failed = 0;
    while let Some(result) = receiver.recv().await {
        match result {
            Some(us) => {
                let _ = latency_us.record(us);
            }
            None => failed += 1,
        }
    }
    LoadStats {
        succeeded: latency_us.len(),
        failed,
        elapsed: started.elapsed(),
        latency_us,
    }
}
