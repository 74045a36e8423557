//! Bad configuration fails with an error that says what is wrong.

use std::time::Duration;

use keyward_client::{Client, ClientConfig, Error, TlsConfig, Verifier, VerifierConfig};

fn config_error(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Config(message)) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_client_config_is_a_clear_error() {
    let message = config_error(Client::connect_lazy(ClientConfig::new("not a url at all")));
    assert!(
        message.contains("endpoint") && message.contains("not a url at all"),
        "{message}"
    );
    let message = config_error(Client::connect_lazy(ClientConfig::new("ftp://127.0.0.1:1")));
    assert!(message.contains("http://host:port"), "{message}");
    let message = config_error(Client::connect_lazy(ClientConfig::new(
        "https://127.0.0.1:1",
    )));
    assert!(message.contains("tls"), "{message}");
    let message = config_error(Client::connect_lazy(
        ClientConfig::new("http://127.0.0.1:1").tls(TlsConfig::default()),
    ));
    assert!(message.contains("https://"), "{message}");
    let mut zero = ClientConfig::new("http://127.0.0.1:1");
    zero.request_timeout = Duration::ZERO;
    assert!(config_error(Client::connect_lazy(zero)).contains("request_timeout"));

    // A token that cannot be sent is refused without being repeated.
    let message = config_error(Client::connect_lazy(
        ClientConfig::new("http://127.0.0.1:1").token("s3cr3t\nt0ken"),
    ));
    assert!(
        message.contains("token") && !message.contains("s3cr3t"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_connect_error_naming_it() {
    let port = keyward_testkit::free_port("127.0.0.1");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut config = ClientConfig::new(&endpoint).token("tok_do_not_print");
    config.connect_timeout = Duration::from_secs(2);
    match Client::connect(config).await {
        Err(error @ Error::Connect { .. }) => {
            let shown = format!("{error} {error:?}");
            assert!(shown.contains(&endpoint), "{shown}");
            assert!(!shown.contains("tok_do_not_print"), "{shown}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_verifier_config_is_a_clear_error() {
    let client = Client::connect_lazy(ClientConfig::new("http://127.0.0.1:1")).unwrap();
    let with = |change: fn(&mut VerifierConfig)| {
        let mut config = VerifierConfig::default();
        change(&mut config);
        config_error(Verifier::new(client.clone(), config))
    };
    assert!(with(|c| c.freshness_bound = Duration::ZERO).contains("freshness_bound"));
    assert!(with(|c| c.freshness_bound = Duration::from_millis(100)).contains("freshness_bound"));
    assert!(
        with(|c| c.checkpoint_interval = Some(Duration::from_secs(2))).contains("freshness_bound")
    );
    assert!(
        with(|c| c.checkpoint_interval = Some(Duration::from_millis(10)))
            .contains("checkpoint_interval")
    );
    assert!(with(|c| c.max_entries = 0).contains("max_entries"));
    assert!(with(|c| c.usage_flush_interval = Duration::ZERO).contains("usage_flush_interval"));
}
