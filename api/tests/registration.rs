//! Registration proves possession of the node's key: a single-use challenge from the hub, signed
//! with the node's secp256k1 key, and a node name bound to the key that first registered it. Every
//! test runs on SQLite and on PostgreSQL.

mod common;

use common::*;
use k256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};

/// A key no test node has.
fn stranger() -> SigningKey {
    node_key("a stranger")
}

/// The nodes the API lists, by name.
async fn node_names(app: &axum::Router, key: &str) -> Vec<String> {
    let reply = send(app, "GET", "/v1/nodes", Some(key), None, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["items"]
        .as_array()
        .expect("a node list")
        .iter()
        .map(|n| n["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Asserts a 401 naming `field`, with `code`.
fn assert_unproven(reply: &Reply, code: &str, field: &str, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    assert_eq!(error_code(reply), code, "{what}: {}", reply.body);
    assert_eq!(
        reply.body["error"]["field"], field,
        "{what}: {}",
        reply.body
    );
}

/// A fresh challenge for `key`, as the hub issues it.
async fn fresh_challenge(app: &axum::Router, key: &SigningKey) -> String {
    let reply = challenge(app, &public_key_hex(key)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["challenge"].as_str().unwrap().to_string()
}

backend_tests! {
    async fn a_signed_registration_registers_the_node_under_its_key(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let node_key = node_key("gn-a");
        let reply = challenge(&app, &public_key_hex(&node_key)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let nonce = reply.body["challenge"].as_str().unwrap();
        assert!(nonce.len() == 64 && nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
        let expires: jiff::Timestamp = reply.body["expiresAt"].as_str().unwrap().parse().unwrap();
        let ttl = expires.duration_since(jiff::Timestamp::now()).as_secs();
        assert!((30..=61).contains(&ttl), "a challenge lives about a minute: {ttl} s");
        let other = fresh_challenge(&app, &node_key).await;
        assert_ne!(nonce, other, "every challenge is new");

        let mut reg = registration("gn-a", "eu-west", 2, "1.00");
        reg["operatorAddress"] = json!("cosmos1qyqszqgpqyqszqgpqyqszqgpqyqszqgp2cyq8z");
        let signed = sign_with(&reg, &node_key, nonce);
        let reply = send_registration(&app, &signed).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let token = reply.body["token"].as_str().unwrap().to_string();
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200, "the token acts for the node");
        assert_eq!(node_names(&app, &key).await, ["gn-a"]);
        assert_eq!(
            store.node_public_key("gn-a").await.unwrap().as_deref(),
            Some(public_key_hex(&node_key).as_str()),
            "the node row keeps the key it proved"
        );
    }

    async fn a_wrong_signature_is_refused(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let owner = node_key("gn-a");
        let reg = registration("gn-a", "eu-west", 1, "1.00");

        // Signed by another key, claiming the owner's.
        let nonce = fresh_challenge(&app, &owner).await;
        let mut forged = sign_with(&reg, &stranger(), &nonce);
        forged["publicKey"] = public_key_hex(&owner).into();
        assert_unproven(&send_registration(&app, &forged).await, "invalid_signature", "signature", "another key's signature");

        // A valid signature over other fields: every signed field is bound.
        let signed = sign_with(&reg, &owner, &nonce);
        let mut renamed = signed.clone();
        renamed["name"] = json!("gn-b");
        renamed["publicKey"] = public_key_hex(&owner).into();
        assert_unproven(&send_registration(&app, &renamed).await, "invalid_signature", "signature", "another name");
        let mut redirected = signed.clone();
        redirected["operatorAddress"] = json!("cosmos1qyqszqgpqyqszqgpqyqszqgpqyqszqgp2cyq8z");
        assert_unproven(&send_registration(&app, &redirected).await, "invalid_signature", "signature", "another operator");
        let mut other_challenge = signed.clone();
        other_challenge["challenge"] = fresh_challenge(&app, &owner).await.into();
        assert_unproven(&send_registration(&app, &other_challenge).await, "invalid_signature", "signature", "another challenge");

        // The same signature with a high s (n − s), which plain ECDSA would accept.
        let signature = Signature::from_slice(&hex::decode(signed["signature"].as_str().unwrap()).unwrap()).unwrap();
        let twin = Signature::from_scalars(signature.r(), -signature.s()).unwrap();
        let mut malleated = signed.clone();
        malleated["signature"] = hex::encode(twin.to_bytes()).into();
        assert_unproven(&send_registration(&app, &malleated).await, "invalid_signature", "signature", "a high-s signature");

        // Not a signature at all (zero r and s).
        let mut zero = signed.clone();
        zero["signature"] = json!("00".repeat(64));
        assert_unproven(&send_registration(&app, &zero).await, "invalid_signature", "signature", "zeros");

        assert!(node_names(&app, &key).await.is_empty(), "refused registrations register nothing");
        // The refusals did not use the challenge up: the signed original still registers.
        assert_eq!(send_registration(&app, &signed).await.status, 200);
    }

    async fn a_challenge_counts_once_only_while_fresh_and_only_if_issued(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let owner = node_key("gn-a");
        let reg = registration("gn-a", "eu-west", 1, "1.00");

        let unknown = sign_with(&reg, &owner, &"ab".repeat(32));
        assert_unproven(&send_registration(&app, &unknown).await, "invalid_challenge", "challenge", "an unknown challenge");

        let expired = "cd".repeat(32);
        store.issue_challenge(&expired, &public_key_hex(&owner), api::store::now_ms() - 1).await.unwrap();
        let late = sign_with(&reg, &owner, &expired);
        assert_unproven(&send_registration(&app, &late).await, "invalid_challenge", "challenge", "an expired challenge");
        assert!(node_names(&app, &key).await.is_empty());

        let signed = signed(&app, &reg).await;
        let first = send_registration(&app, &signed).await;
        assert_eq!(first.status, 200, "{}", first.body);
        let replayed = send_registration(&app, &signed).await;
        assert_unproven(&replayed, "invalid_challenge", "challenge", "a replayed registration");
        let token = first.body["token"].as_str().unwrap();
        assert_eq!(heartbeat(&app, token, &[]).await.status, 200, "the replay changed nothing");
    }

    async fn a_challenge_issued_for_another_key_is_refused(store: Store) {
        let (app, _, _) = app(&store, "team-a").await;
        let owner = node_key("gn-a");
        let reg = registration("gn-a", "eu-west", 1, "1.00");
        // An eavesdropper takes the owner's challenge and signs it with its own key.
        let nonce = fresh_challenge(&app, &owner).await;
        let stolen = sign_with(&reg, &stranger(), &nonce);
        assert_unproven(&send_registration(&app, &stolen).await, "invalid_challenge", "challenge", "another key's challenge");
        // ... which does not spoil it for its owner.
        let reply = send_registration(&app, &sign_with(&reg, &owner, &nonce)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    async fn a_name_stays_bound_to_the_key_that_registered_it(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let reg = registration("gn-a", "eu-west", 2, "1.00");
        let token = register(&app, &reg).await;

        // Someone else registers the name with their own, validly signed key.
        let mut hijack = reg.clone();
        hijack["region"] = json!("us-east");
        let reply = send_registration(&app, &signed_by(&app, &hijack, &stranger()).await).await;
        assert_eq!(reply.status, 409, "{}", reply.body);
        assert_eq!(error_code(&reply), "node_key_mismatch", "{}", reply.body);

        // The owner's node is untouched and keeps working.
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200, "the owner's token still acts");
        let node = get_node(&app, &key, "gn-a").await;
        assert_eq!(node["spec"]["region"], "eu-west", "{node}");
        assert_eq!(
            store.node_public_key("gn-a").await.unwrap().as_deref(),
            Some(public_key_hex(&node_key("gn-a")).as_str())
        );
        // And the owner can still register it again.
        register(&app, &reg).await;
    }

    async fn registering_again_with_the_same_key_rotates_the_token(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let reg = registration("gn-a", "eu-west", 1, "1.00");
        let old = register(&app, &reg).await;
        let new = register(&app, &reg).await;
        assert_ne!(old, new);
        assert_eq!(heartbeat(&app, &old, &[]).await.status, 401, "the old token stops working");
        assert_eq!(heartbeat(&app, &new, &[]).await.status, 200);
        assert_eq!(node_names(&app, &key).await, ["gn-a"]);
    }

    async fn malformed_keys_and_addresses_are_invalid_fields(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        // An x coordinate of all ones is beyond the field: the right shape, but not a point.
        let not_a_point = format!("02{}", "ff".repeat(32));
        let bad_keys: [(&str, Value); 5] = [
            ("not hex", json!("zz".repeat(33))),
            ("uncompressed", json!(format!("04{}", "11".repeat(64)))),
            ("upper case", json!(public_key_hex(&node_key("gn-a")).to_uppercase())),
            ("off the curve", json!(not_a_point)),
            ("not a string", json!(7)),
        ];
        for (what, public_key) in &bad_keys {
            let body = json!({ "publicKey": public_key });
            let reply = send(&app, "POST", "/v1/agent/challenge", None, Some("application/json"), body.to_string()).await;
            assert_eq!(reply.status, 422, "challenge, {what}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], "publicKey", "challenge, {what}: {}", reply.body);

            let mut reg = registration("gn-a", "eu-west", 1, "1.00");
            reg["publicKey"] = public_key.clone();
            let reply = send_registration(&app, &reg).await;
            assert_eq!(reply.status, 422, "register, {what}: {}", reply.body);
            assert_eq!(error_code(&reply), "invalid_field", "register, {what}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], "publicKey", "register, {what}: {}", reply.body);
        }

        for address in ["0xdeadbeefdeadbeef", "cosmos1short", "Cosmos1qyqszqgpqyqszqgp", "cosmos1qyqszqgpqyqszqgpb", "cosmos"] {
            let mut reg = registration("gn-a", "eu-west", 1, "1.00");
            reg["operatorAddress"] = json!(address);
            let reply = send_registration(&app, &signed(&app, &reg).await).await;
            assert_eq!(reply.status, 422, "{address}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], "operatorAddress", "{address}: {}", reply.body);
        }

        // An agent from before node keys sends no proof at all.
        let mut old = registration("gn-a", "eu-west", 1, "1.00");
        for field in ["publicKey", "challenge", "signature"] {
            old.as_object_mut().unwrap().remove(field);
        }
        assert_eq!(send_registration(&app, &old).await.status, 422);
        assert!(node_names(&app, &key).await.is_empty());
    }

    async fn control_characters_in_declared_names_are_invalid_fields(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let cases: [(&str, &str, Value); 5] = [
            ("gpus[0].uuid", "/gpus/0/uuid", json!("GPU-\u{0}-0")),
            ("gpus[0].model", "/gpus/0/model", json!("H100\n80GB")),
            ("capabilities[0]", "/capabilities/0", json!("builtin:\u{1b}sleep")),
            ("agentVersion", "/agentVersion", json!("0.1\u{0}")),
            ("region", "/region", json!("eu\u{0}west")),
        ];
        for (field, pointer, value) in cases {
            let mut reg = registration("gn-a", "eu-west", 1, "1.00");
            match reg.pointer_mut(pointer) {
                Some(slot) => *slot = value.clone(),
                // A top-level field the sample registration does not have.
                None => reg[&pointer[1..]] = value.clone(),
            }
            let reply = send_registration(&app, &signed(&app, &reg).await).await;
            assert_eq!(reply.status, 422, "{field} = {value}: {}", reply.body);
            assert_eq!(error_code(&reply), "invalid_field", "{field}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{}", reply.body);
        }
        assert!(node_names(&app, &key).await.is_empty(), "nothing registered");
    }
}
