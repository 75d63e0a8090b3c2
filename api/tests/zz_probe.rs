mod common;
use common::*;
use serde_json::json;

backend_tests! {
    async fn probe(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        for (m, u, ct, b) in [
            ("GET", "/v1/jobs/%FF", None, ""),
            ("PUT", "/v1/jobs", None, ""),
            ("POST", "/v1/agent/register", Some("application/json"), ""),
            ("GET", "/v1/nodes/nope", None, ""),
            ("POST", "/v1/jobs", Some("application/json"), "{}"),
            ("POST", "/v1/jobs", Some("application/json"), "null"),
            ("POST", "/v1/jobs", Some("application/yaml"), ""),
        ] {
            let r = send(&app, m, u, Some(&key), ct, b).await;
            println!("{m} {u} {b:?} -> {} {:?} {}", r.status, r.header("content-type"), r.text);
        }
        let token = register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        let r = send(&app, "GET", "/v1/agent/assignments?waitSeconds=-1", Some(&token), None, "").await;
        println!("wait -1 -> {} {}", r.status, r.text);
        let mut stuck = 0;
        for round in 0..15 {
            let mut spec = sleep_spec(1);
            spec["resources"]["workers"] = json!(2);
            let job = submit(&app, &key, &spec).await;
            assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
            let ids: Vec<String> = poll(&app, &token).await.iter().filter(|a| a["job"] == job.as_str()).map(|a| a["id"].as_str().unwrap().to_string()).collect();
            for st in ["Running", "Succeeded"] {
                let hs: Vec<_> = ids.iter().map(|id| {
                    let (app, token, id) = (app.clone(), token.clone(), id.clone());
                    tokio::spawn(async move { report(&app, &token, &id, st, Some(0), None).await.status })
                }).collect();
                for h in hs { assert_eq!(h.await.unwrap(), 204); }
                let phase = get_job(&app, &key, &job).await["status"]["phase"].clone();
                if phase != st { stuck += 1; println!("round {round}: both {st} but job {phase}"); }
            }
        }
        println!("stuck {stuck}");
    }
}
