//! A TCP proxy between keyward and a real PostgreSQL that can stall one of
//! keyward's sessions while it sits inside a transaction (nothing keyward
//! sends reaches the database any more), and reports what the database
//! answers the sessions it carries: for tests of the session limits keyward
//! sets, which nothing outside a session can read. The database and
//! keyward are real; the proxy only forwards bytes and watches the
//! database's messages (which is why it asks keyward for no TLS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the proxy saw on a session (numbered in order of connection).
#[derive(Debug, Clone)]
pub enum Seen {
    /// The database told keyward it is ready inside a transaction
    /// (ReadyForQuery, status `T`) and the proxy stalled the session:
    /// from here on nothing keyward sends reaches the database.
    Stalled { session: usize, at: Instant },
    /// The database sent an error (ErrorResponse) with this SQLSTATE.
    Error {
        session: usize,
        sqlstate: String,
        at: Instant,
    },
}

pub struct PgProxy {
    addr: SocketAddr,
    stall_next: Arc<AtomicBool>,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// A proxy in front of the database server that `database_url` names.
    pub async fn start(database_url: &str) -> Self {
        let (_, authority, _) = split_url(database_url);
        let host_port = authority.rsplit('@').next().unwrap();
        let upstream = tokio::net::lookup_host(host_port)
            .await
            .expect("the database's address resolves")
            .next()
            .expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stall_next = Arc::new(AtomicBool::new(false));
        let (report, seen) = mpsc::unbounded_channel();
        let accept = tokio::spawn({
            let stall_next = Arc::clone(&stall_next);
            async move {
                // Dropped with the accept task: ends every carried session.
                let mut sessions = JoinSet::new();
                let numbers = AtomicUsize::new(0);
                while let Ok((client, _)) = listener.accept().await {
                    let session = numbers.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let stalled = Arc::new(AtomicBool::new(false));
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = server.into_split();
                    sessions.spawn(keyward_to_database(
                        from_client,
                        to_server,
                        Arc::clone(&stalled),
                    ));
                    sessions.spawn(database_to_keyward(
                        from_server,
                        to_client,
                        Watch {
                            session,
                            stalled,
                            stall_next: Arc::clone(&stall_next),
                            report: report.clone(),
                        },
                    ));
                }
            }
        });
        Self {
            addr,
            stall_next,
            seen,
            accept,
        }
    }

    /// `database_url` through this proxy, without TLS.
    pub fn url(&self, database_url: &str) -> String {
        let (scheme, authority, rest) = split_url(database_url);
        let user = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        let separator = if rest.contains('?') { '&' } else { '?' };
        format!(
            "{scheme}://{user}{}{rest}{separator}sslmode=disable",
            self.addr
        )
    }

    /// Stalls the next session that becomes ready inside a transaction.
    pub fn stall_next_transaction(&self) {
        self.stall_next.store(true, Ordering::SeqCst);
    }

    /// The next thing seen that `pick` accepts, within `limit`.
    pub async fn wait_for<T>(
        &mut self,
        limit: std::time::Duration,
        mut pick: impl FnMut(&Seen) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .ok()??;
            if let Some(picked) = pick(&seen) {
                return Some(picked);
            }
        }
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// (scheme, authority, path and query) of a URL.
fn split_url(url: &str) -> (&str, &str, &str) {
    let (scheme, after) = url.split_once("://").expect("a URL");
    let end = after.find(['/', '?']).unwrap_or(after.len());
    (scheme, &after[..end], &after[end..])
}

/// Forwards what keyward sends, until its session is stalled: then holds
/// it (the connection stays open, so the database sees a session that is
/// simply idle).
async fn keyward_to_database(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

struct Watch {
    session: usize,
    stalled: Arc<AtomicBool>,
    stall_next: Arc<AtomicBool>,
    report: mpsc::UnboundedSender<Seen>,
}

/// Forwards the database's messages whole, watching each: ReadyForQuery
/// inside a transaction stalls the session when a stall is asked for (before
/// keyward can see it, so keyward's next statement is held), and errors are
/// reported with their SQLSTATE.
async fn database_to_keyward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, watch: Watch) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = vec![0; 16 * 1024];
    'read: loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&buffer[..read]);
        let mut used = 0;
        while pending.len() - used >= 5 {
            let kind = pending[used];
            let length =
                u32::from_be_bytes(pending[used + 1..used + 5].try_into().unwrap()) as usize;
            let end = used + 1 + length;
            if pending.len() < end {
                break;
            }
            let body = &pending[used + 5..end];
            match kind {
                b'Z' if body == b"T" && watch.stall_next.swap(false, Ordering::SeqCst) => {
                    watch.stalled.store(true, Ordering::SeqCst);
                    let _ = watch.report.send(Seen::Stalled {
                        session: watch.session,
                        at: Instant::now(),
                    });
                }
                b'E' => {
                    let _ = watch.report.send(Seen::Error {
                        session: watch.session,
                        sqlstate: sqlstate(body),
                        at: Instant::now(),
                    });
                }
                _ => {}
            }
            if to.write_all(&pending[used..end]).await.is_err() {
                break 'read;
            }
            used = end;
        }
        pending.drain(..used);
    }
    let _ = to.shutdown().await;
}

/// The SQLSTATE field (`C`) of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    let mut fields = body.split(|&b| b == 0);
    for field in fields.by_ref() {
        if let Some((&b'C', code)) = field.split_first() {
            return String::from_utf8_lossy(code).into_owned();
        }
    }
    String::new()
}
