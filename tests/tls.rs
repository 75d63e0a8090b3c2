//! The hub over HTTPS, end to end on loopback: a hub serving a certificate from a CA made for the
//! test (rcgen; nothing from the network, nothing to expire in the repository), reached by both of
//! Agora's clients — the CLI's REST client and the agent's protocol client — once trusting that CA
//! (the request reaches the hub) and once with only the system's roots (refused: certificate
//! error). And `agora server` refusing plain HTTP off loopback, as a user would meet it.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA and a hub certificate for `127.0.0.1` and `localhost` signed by it, as PEM files.
struct TestPki {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn test_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Agora test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let hub_key = KeyPair::generate().unwrap();
    let mut hub_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    hub_params
        .distinguished_name
        .push(DnType::CommonName, "agora hub");
    let hub_cert = hub_params.signed_by(&hub_key, &ca).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("hub.crt");
    let key = dir.path().join("hub.key");
    std::fs::write(&cert, hub_cert.pem()).unwrap();
    std::fs::write(&key, hub_key.serialize_pem()).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        dir,
        cert,
        key,
    }
}

async fn start_tls_hub(pki: &TestPki) -> api::RunningHub {
    api::RunningHub::start(api::HubConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", pki.dir.path().join("hub.db").display()),
        settings: api::HubSettings::default(),
        api_key_file: Some(pki.dir.path().join("api-key")),
        tls: Some(api::server::TlsFiles {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        }),
        allow_plain_http: false,
        chain: None,
    })
    .await
    .expect("a TLS hub starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trust_the_hubs_ca_get_through_and_others_are_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = test_pki();
    let hub = start_tls_hub(&pki).await;
    let url = hub.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let api_key = hub.api_key().map(str::to_string);

    // The CLI's client, trusting the test CA: an authenticated call succeeds.
    let trusting = api::client::HubTrust {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        allow_plain_http: false,
    };
    let client = api::client::HubClient::with_trust(&url, api_key.clone(), &trusting).unwrap();
    let nodes = client
        .list_nodes(None, None)
        .await
        .expect("listing nodes over HTTPS");
    assert!(nodes.items.is_empty());

    // The same client with the system's roots only: the hub's certificate is not trusted.
    let client = api::client::HubClient::new(&url, api_key).unwrap();
    let err = client.list_nodes(None, None).await.unwrap_err();
    assert!(
        matches!(err, api::client::ClientError::Tls { .. }),
        "expected a TLS error, got {err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("--hub-ca"), "{message}");

    // The agent's client, trusting the test CA: the hub answers (a made-up token is a 401, which
    // is an answer from the hub, so the TLS session was established and verified).
    let trusting = gpu_runtime::client::HubTrust {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        allow_plain_http: false,
    };
    let agent = gpu_runtime::client::HubClient::new(&url, &trusting).unwrap();
    let heartbeat = crds::agent::HeartbeatRequest::default();
    assert_eq!(
        agent
            .heartbeat("agt_made-up", &heartbeat)
            .await
            .unwrap_err(),
        gpu_runtime::client::ClientError::Unauthorized
    );

    // The agent's client with the system's roots only: refused before any request is sent.
    let agent =
        gpu_runtime::client::HubClient::new(&url, &gpu_runtime::client::HubTrust::default())
            .unwrap();
    match agent.heartbeat("agt_made-up", &heartbeat).await {
        Err(gpu_runtime::client::ClientError::Transient(message)) => {
            assert!(message.contains("certificate"), "{message}");
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }

    // Plain HTTP to the HTTPS port gets nowhere either.
    let plain = url.replacen("https://", "http://", 1);
    let client = api::client::HubClient::new(&plain, None).unwrap();
    assert!(client.list_nodes(None, None).await.is_err());

    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_that_does_not_fit_the_certificate_is_refused_at_start() {
    let pki = test_pki();
    let other = KeyPair::generate().unwrap();
    std::fs::write(&pki.key, other.serialize_pem()).unwrap();
    let err = api::server::tls_acceptor(&api::server::TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    })
    .err()
    .expect("a mismatched key is refused");
    assert!(format!("{err:#}").contains("does not fit"), "{err:#}");

    let missing = api::server::tls_acceptor(&api::server::TlsFiles {
        cert: pki.dir.path().join("nope.crt"),
        key: pki.key.clone(),
    })
    .err()
    .expect("a missing certificate is refused");
    assert!(format!("{missing:#}").contains("nope.crt"), "{missing:#}");
}

#[test]
fn agora_server_refuses_plain_http_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args([
        "server",
        "--listen",
        "0.0.0.0:0",
        "--database-url",
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
    ])
    .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AGORA_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().expect("running agora server");
    assert!(
        !out.status.success(),
        "agora server served plain HTTP on 0.0.0.0"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0")
            && stderr.contains("--tls-cert FILE and --tls-key FILE")
            && stderr.contains("--allow-plain-http"),
        "stderr: {stderr}"
    );
    // Nothing was created: the refusal comes before the database is opened.
    assert!(!dir.path().join("hub.db").exists());
}
