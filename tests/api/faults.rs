//! Faults between a keyward replica and its PostgreSQL, injected for real.
//! For now, the stalling proxy the faults are made with
//! (`helpers::stalling_proxy`), checked against an echo server.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::eventually;
use crate::helpers::stalling_proxy::{Hold, StallingProxy};

/// The proxy itself, against an echo server: while holding, replies are kept
/// (counted, not delivered); release delivers them in order; the
/// connection that sent `LISTEN` can be held alone; a trigger split across
/// writes fires; cut closes the connections open then, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stalling_proxy_holds_releases_in_order_and_cuts() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let proxy = StallingProxy::start(echo_addr).await;
    let port = proxy.addr().port();
    assert_eq!(
        proxy.url_for("postgres://postgres@127.0.0.1:5432/kwt_1?application_name=b"),
        format!("postgres://postgres@127.0.0.1:{port}/kwt_1?application_name=b")
    );
    assert_eq!(
        proxy.url_for("postgres://u:p@localhost/db"),
        format!("postgres://u:p@127.0.0.1:{port}/db")
    );

    async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buffer = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buffer))
            .await
            .expect("bytes arrive")
            .unwrap();
        buffer
    }
    let held = async |bytes: u64| {
        eventually(Duration::from_secs(5), async || proxy.held_bytes() == bytes).await
    };

    let mut plain = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut listener = TcpStream::connect(proxy.addr()).await.unwrap();
    plain.write_all(b"one").await.unwrap();
    assert_eq!(read_n(&mut plain, 3).await, b"one");

    proxy.hold(Hold::All);
    plain.write_all(b"two").await.unwrap();
    assert!(held(3).await);
    plain.write_all(b"three").await.unwrap();
    assert!(held(8).await);
    proxy.release();
    assert_eq!(read_n(&mut plain, 8).await, b"twothree");
    assert!(held(0).await);

    listener.write_all(b"LISTEN \"x\"").await.unwrap();
    assert_eq!(read_n(&mut listener, 10).await, b"LISTEN \"x\"");
    assert_eq!(proxy.listeners_seen(), 1);
    proxy.hold(Hold::Listener);
    plain.write_all(b"a").await.unwrap();
    assert_eq!(read_n(&mut plain, 1).await, b"a");
    listener.write_all(b"b").await.unwrap();
    assert!(held(1).await);
    proxy.release();
    assert_eq!(read_n(&mut listener, 1).await, b"b");

    proxy.hold_all_once_sent(b"NEEDLE");
    plain.write_all(b"x").await.unwrap();
    assert_eq!(read_n(&mut plain, 1).await, b"x");
    // Split across two writes (the first echoed before the second is sent).
    plain.write_all(b"NEE").await.unwrap();
    assert_eq!(read_n(&mut plain, 3).await, b"NEE");
    plain.write_all(b"DLE").await.unwrap();
    assert!(held(3).await, "the trigger fired and its reply is held");
    assert_eq!(proxy.holding(), Hold::All);

    proxy.cut();
    proxy.release();
    for stream in [&mut plain, &mut listener] {
        let mut buffer = [0; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("a cut connection closes");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(held(0).await, "cut discards what was held");
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    after.write_all(b"later").await.unwrap();
    assert_eq!(read_n(&mut after, 5).await, b"later");
}
