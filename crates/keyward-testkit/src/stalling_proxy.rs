//! A TCP proxy that stalls the network between a keyward replica and its
//! PostgreSQL on command. It owns a listening socket on 127.0.0.1:0 and, for
//! each connection accepted there, one connection to the target and two
//! pumps (client to server, server to client) on tokio. Only replies (server
//! to client) are ever held: requests still reach the database, so a query
//! runs and it is its answer that stalls. What is held is decided for each
//! chunk read from the server by the rule in force ([`Hold`]), which the test
//! can change at any time; held bytes are buffered in order, not dropped, so
//! [`StallingProxy::release`] is a stalled network that recovers, and
//! [`StallingProxy::cut`] one that gives up (the connections close). The
//! proxy also tags the connection that sent `LISTEN` (PostgreSQL's
//! notification listener), so the listener alone can be held.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whose replies the proxy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// None: bytes flow.
    Nothing,
    /// Every connection's, including connections opened while holding.
    All,
    /// Only connections whose client has sent `LISTEN`.
    Listener,
}

/// The rule in force, published to every pump.
#[derive(Debug, Clone, Copy)]
struct Rules {
    hold: Hold,
    /// Connections with a smaller id are to close (`cut`).
    cut_below: u64,
}

struct Shared {
    target: SocketAddr,
    rules: watch::Sender<Rules>,
    /// Bytes that switch the rule to `Hold::All` when a client sends them
    /// (checked before they are forwarded, so their reply is held).
    trigger: Mutex<Option<Vec<u8>>>,
    next_id: AtomicU64,
    /// Reply bytes held right now.
    held_bytes: AtomicU64,
    /// Connections that have sent `LISTEN`, ever.
    listeners_seen: AtomicU64,
}

struct Connection {
    id: u64,
    /// Its client has sent `LISTEN`.
    listener: AtomicBool,
}

impl Shared {
    fn holds(&self, rules: &Rules, connection: &Connection) -> bool {
        match rules.hold {
            Hold::Nothing => false,
            Hold::All => true,
            Hold::Listener => connection.listener.load(Ordering::Acquire),
        }
    }
}

/// The proxy; dropping it closes every connection it carries.
pub struct StallingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl StallingProxy {
    /// Listens on 127.0.0.1:0 and forwards to `target`; nothing is held.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (rules, _) = watch::channel(Rules {
            hold: Hold::Nothing,
            cut_below: 0,
        });
        let shared = Arc::new(Shared {
            target,
            rules,
            trigger: Mutex::new(None),
            next_id: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            listeners_seen: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `database_url` (a `postgres://` URL naming the target) with its host
    /// and port replaced by the proxy's.
    pub fn url_for(&self, database_url: &str) -> String {
        let scheme_end = database_url.find("://").expect("a URL") + 3;
        let rest = &database_url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
        format!(
            "{}{user}{}{}",
            &database_url[..scheme_end],
            self.addr,
            &rest[authority_end..]
        )
    }

    /// Holds replies as `hold` says from now on (replies held under an
    /// earlier rule stay held only if this one holds them too).
    pub fn hold(&self, hold: Hold) {
        self.shared.rules.send_modify(|rules| rules.hold = hold);
    }

    /// Arms a trigger: the first time any client sends `needle` (in one
    /// write or across several), the proxy holds everything, beginning with
    /// the reply to that very request.
    pub fn hold_all_once_sent(&self, needle: &[u8]) {
        assert!(!needle.is_empty());
        *self.shared.trigger.lock().unwrap() = Some(needle.to_vec());
    }

    /// Delivers everything held, in order, and holds nothing more (a trigger
    /// not yet fired is disarmed).
    pub fn release(&self) {
        *self.shared.trigger.lock().unwrap() = None;
        self.hold(Hold::Nothing);
    }

    /// Closes every connection open now, discarding what it held; later
    /// connections are accepted as usual.
    pub fn cut(&self) {
        let below = self.shared.next_id.load(Ordering::Acquire);
        self.shared
            .rules
            .send_modify(|rules| rules.cut_below = rules.cut_below.max(below));
    }

    /// The rule in force.
    pub fn holding(&self) -> Hold {
        self.shared.rules.borrow().hold
    }

    /// Reply bytes held right now.
    pub fn held_bytes(&self) -> u64 {
        self.shared.held_bytes.load(Ordering::Acquire)
    }

    /// How many connections have sent `LISTEN` so far.
    pub fn listeners_seen(&self) -> u64 {
        self.shared.listeners_seen.load(Ordering::Acquire)
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.release();
        self.shared
            .rules
            .send_modify(|rules| rules.cut_below = u64::MAX);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let id = shared.next_id.fetch_add(1, Ordering::AcqRel);
            // A target that refuses is a refused connection for the client.
            let Ok(server) = TcpStream::connect(shared.target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let connection = Arc::new(Connection {
                id,
                listener: AtomicBool::new(false),
            });
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let requests = pump_requests(
                client_read,
                server_write,
                Arc::clone(&connection),
                Arc::clone(&shared),
            );
            let replies = pump_replies(server_read, client_write, connection, shared);
            // Either side ending (or a cut) ends the connection.
            tokio::select! {
                () = requests => {}
                () = replies => {}
            }
        });
    }
}

/// Whether `needle` occurs in `tail` followed by `chunk`.
fn sent(tail: &[u8], chunk: &[u8], needle: &[u8]) -> bool {
    let mut window = Vec::with_capacity(tail.len() + chunk.len());
    window.extend_from_slice(tail);
    window.extend_from_slice(chunk);
    window.windows(needle.len()).any(|w| w == needle)
}

/// Client to server: forwarded as read, after looking for `LISTEN` and the
/// trigger.
async fn pump_requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: Arc<Connection>,
    shared: Arc<Shared>,
) {
    const LISTEN: &[u8] = b"LISTEN \"";
    let mut rules = shared.rules.subscribe();
    let mut buffer = vec![0u8; 16 * 1024];
    // The last bytes sent, so a needle split across two reads is found.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        if rules.borrow_and_update().cut_below > connection.id {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = rules.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let chunk = &buffer[..n];
        if !connection.listener.load(Ordering::Acquire) && sent(&tail, chunk, LISTEN) {
            connection.listener.store(true, Ordering::Release);
            shared.listeners_seen.fetch_add(1, Ordering::AcqRel);
        }
        {
            let mut trigger = shared.trigger.lock().unwrap();
            if let Some(needle) = trigger.as_deref()
                && sent(&tail, chunk, needle)
            {
                *trigger = None;
                shared.rules.send_modify(|rules| rules.hold = Hold::All);
            }
        }
        tail.extend_from_slice(chunk);
        let keep = 64;
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Reply bytes a connection holds, counted in `Shared::held_bytes` for as
/// long as they are held (also when the connection ends while holding).
struct Held {
    bytes: Vec<u8>,
    shared: Arc<Shared>,
}

impl Held {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        self.shared
            .held_bytes
            .fetch_add(chunk.len() as u64, Ordering::AcqRel);
    }

    fn take(&mut self) -> Vec<u8> {
        self.shared
            .held_bytes
            .fetch_sub(self.bytes.len() as u64, Ordering::AcqRel);
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.take();
    }
}

/// Server to client: each chunk is held while the rule in force holds this
/// connection, behind any bytes already held, and delivered in order once
/// it does not.
async fn pump_replies(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    connection: Arc<Connection>,
    shared: Arc<Shared>,
) {
    let mut rules = shared.rules.subscribe();
    let mut buffer = vec![0u8; 16 * 1024];
    let mut held = Held {
        bytes: Vec::new(),
        shared: Arc::clone(&shared),
    };
    let mut server_done = false;
    loop {
        let now = *rules.borrow_and_update();
        if now.cut_below > connection.id {
            return;
        }
        let holding = shared.holds(&now, &connection);
        if !holding && !held.bytes.is_empty() {
            let bytes = held.take();
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            continue;
        }
        if server_done {
            if holding {
                // Keep what is held until release or cut.
                if rules.changed().await.is_err() {
                    return;
                }
                continue;
            }
            return;
        }
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => server_done = true,
                Ok(n) => {
                    let chunk = &buffer[..n];
                    if shared.holds(&rules.borrow(), &connection) || !held.bytes.is_empty() {
                        held.push(chunk);
                    } else if to.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            },
            changed = rules.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
