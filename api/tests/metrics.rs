//! What an operator scrapes: `/metrics` in the Prometheus text format with the hub's state and
//! request counters (labelled by route template, never by id), and the health endpoints.

mod common;

use common::*;

/// The `/metrics` text, asserting the Prometheus text content type.
async fn scrape(app: &axum::Router) -> String {
    let reply = send(app, "GET", "/metrics", None, None, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.header("content-type").starts_with("text/plain"),
        "Prometheus text format, got {:?}",
        reply.header("content-type")
    );
    reply.text
}

/// The value of the sample whose name is `name` and whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse().unwrap())
        })
}

backend_tests! {
    async fn metrics_show_jobs_gpus_and_requests_by_route(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let before = scrape(&app).await;
        assert_eq!(sample(&before, "agora_jobs", &["phase=\"Pending\""]), Some(0.0), "{before}");
        assert_eq!(sample(&before, "agora_jobs_submitted_total", &[]), Some(0.0), "{before}");

        let id = submit(&app, &key, &sleep_spec(1)).await;
        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        get_job(&app, &key, &id).await;

        let text = scrape(&app).await;
        assert!(text.lines().any(|l| l == "agora_jobs{phase=\"Pending\"} 1"), "{text}");
        assert!(text.lines().any(|l| l == "agora_jobs_submitted_total 1"), "{text}");
        let free = sample(&text, "agora_gpus", &["region=\"eu-west\"", "model=\"H100-80GB\"", "state=\"free\""]);
        assert_eq!(free, Some(2.0), "{text}");
        assert_eq!(sample(&text, "agora_nodes", &["region=\"eu-west\"", "ready=\"true\""]), Some(1.0), "{text}");

        let read = ["method=\"GET\"", "route=\"/v1/jobs/{id}\"", "status=\"200\""];
        assert_eq!(sample(&text, "agora_http_requests_total", &read), Some(1.0), "{text}");
        let submitted = ["method=\"POST\"", "route=\"/v1/jobs\"", "status=\"201\""];
        assert_eq!(sample(&text, "agora_http_requests_total", &submitted), Some(1.0), "{text}");
        assert!(!text.contains(&id), "a job id must never become a label value: {text}");
    }

    async fn health_and_readiness_answer_ok(store: Store) {
        let (app, _, _) = app(&store, "team-a").await;
        let health = send(&app, "GET", "/healthz", None, None, "").await;
        assert_eq!(health.status, 200, "{}", health.text);
        let ready = send(&app, "GET", "/readyz", None, None, "").await;
        assert_eq!(ready.status, 200, "the database answers: {}", ready.text);
    }
}
