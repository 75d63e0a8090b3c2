//! `agora admin …`: the operator's commands, which work on the hub's database directly rather than
//! through the API, so that the first key of a tenant can be made before anyone holds a key, and a
//! leaked key can be revoked even when the hub is down.
//!
//! Keys are printed once, at creation, and never again: the database holds their SHA-256 and the
//! first characters (the prefix) by which people tell them apart.

use std::io::Write;

use anyhow::Context;
use jiff::Timestamp;

use crate::{
    client::Table,
    server::redact,
    store::{ApiKeyInfo, RevokeOutcome, Store},
};

/// The longest tenant name; tenants are named like Kubernetes namespaces, and a namespace's
/// ComputeJobs belong to the tenant `k8s-` + its name (63 characters at most), which must be
/// reachable here too.
const MAX_TENANT_CHARS: usize = 67;

/// `agora admin …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Create, list and revoke tenants' API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Set the chain address a tenant's jobs are paid from (its escrow in the settlement
    /// contract); a tenant's receipts are settled only once it has one.
    #[command(subcommand)]
    Payer(PayerCommand),
    /// Queue a slash of an operator's stake: the hub's settlement loop sends it to the contract
    /// (`GET /v1/settlement/slashes` shows how it went).
    Slash {
        /// The operator's chain address (the `operatorAddress` its nodes registered with).
        #[arg(long)]
        operator: String,
        /// `fraud`, `cheating` or `downtime` (each has its slash ratio in the contract's params).
        #[arg(long)]
        reason: String,
        /// Why, as a reference anyone can check (a batch and receipt, an incident): 1 to 1024 bytes.
        #[arg(long)]
        evidence: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// `agora admin payer …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PayerCommand {
    /// Set tenant `--tenant`'s payer address (created if new).
    Set {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// A bech32 account address on the settlement chain (e.g. `wasm1…`).
        #[arg(long)]
        address: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// The database the admin commands work on.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// The hub's database: `postgres://USER:PASSWORD@HOST/DB` or `sqlite://PATH`.
    #[arg(long, env = "AGORA_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// `agora admin key …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum KeyCommand {
    /// Create an API key for a tenant (created if new) and print it. It is shown this once.
    Create {
        /// The tenant (lowercase letters, digits and `-`, like a Kubernetes namespace).
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List API keys by tenant, prefix and age; never the keys themselves.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke the API key with this prefix (as `list` shows it). Requests with it answer 401 at
    /// once.
    Revoke {
        /// The key's prefix, e.g. `agora_1a2b3c`.
        prefix: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Runs an admin command, writing what it has to say to `out`.
pub async fn run(command: AdminCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        AdminCommand::Key(command) => run_key(command, out).await,
        AdminCommand::Payer(PayerCommand::Set {
            tenant,
            address,
            database,
        }) => {
            check_tenant(&tenant)?;
            check_address(&address)?;
            let store = open(&database).await?;
            let result = async {
                let id = store.ensure_tenant(&tenant).await?;
                store.set_payer_address(&id, &address).await
            }
            .await;
            store.close().await;
            result?;
            writeln!(out, "tenant `{tenant}` pays from {address}")?;
            Ok(())
        }
        AdminCommand::Slash {
            operator,
            reason,
            evidence,
            database,
        } => {
            let invalid = |e| match e {
                crate::slashing::SlashRequestError::Invalid { field, message } => {
                    anyhow::anyhow!("invalid --{field}: {message}")
                }
                e => anyhow::Error::new(e).context("queueing the slash"),
            };
            crate::slashing::check_request(&operator, &reason, &evidence).map_err(invalid)?;
            let store = open(&database).await?;
            let result =
                crate::slashing::request_slash(&store, &operator, &reason, &evidence).await;
            store.close().await;
            let slash = result.map_err(invalid)?;
            writeln!(
                out,
                "slash {} of {operator} ({reason}) queued: the hub's leader sends it to the contract",
                slash.id
            )?;
            Ok(())
        }
    }
}

/// A chain account address as the settlement contract takes it: bech32, lowercase.
fn check_address(address: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::slashing::is_operator_address(address),
        "invalid --address {address:?}: expected a bech32 account address such as wasm1…"
    );
    Ok(())
}

async fn run_key(command: KeyCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { tenant, database } => {
            check_tenant(&tenant)?;
            let store = open(&database).await?;
            let result = store.create_api_key(&tenant).await;
            store.close().await;
            let (key, info) = result?;
            writeln!(out, "{key}")?;
            eprintln!(
                "Created API key {} for tenant `{}`. It is shown this once: store it now.",
                info.prefix, info.tenant
            );
        }
        KeyCommand::List { database } => {
            let store = open(&database).await?;
            let keys = store.list_api_keys().await;
            store.close().await;
            write!(out, "{}", keys_table(&keys?))?;
        }
        KeyCommand::Revoke { prefix, database } => {
            let store = open(&database).await?;
            let outcome = store.revoke_api_key(prefix.trim()).await;
            store.close().await;
            match outcome? {
                RevokeOutcome::Revoked(info) => writeln!(
                    out,
                    "revoked API key {} of tenant `{}`",
                    info.prefix, info.tenant
                )?,
                RevokeOutcome::NotFound => {
                    anyhow::bail!(
                        "no API key has the prefix {prefix:?} (`agora admin key list` shows them)"
                    )
                }
                RevokeOutcome::Ambiguous(keys) => anyhow::bail!(
                    "{} API keys share the prefix {prefix:?}, so none was revoked; they are:\n{}",
                    keys.len(),
                    keys_table(&keys)
                ),
            }
        }
    }
    Ok(())
}

async fn open(database: &DatabaseArgs) -> anyhow::Result<Store> {
    Store::connect(&database.database_url)
        .await
        .with_context(|| format!("opening the database at {}", redact(&database.database_url)))
}

/// Tenant names are shown in tables and logs and may one day name Kubernetes namespaces, so they
/// are held to the same rule: lowercase letters, digits and `-`, starting and ending with a letter
/// or digit.
fn check_tenant(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TENANT_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    anyhow::ensure!(
        valid,
        "invalid tenant name {name:?}: use 1 to {MAX_TENANT_CHARS} lowercase letters, digits and \
         `-`, starting and ending with a letter or digit"
    );
    Ok(())
}

/// The keys as a table: tenant, prefix, created, revoked.
pub fn keys_table(keys: &[ApiKeyInfo]) -> String {
    let mut table = Table::new(["TENANT", "PREFIX", "CREATED", "REVOKED"]);
    for key in keys {
        table.row([
            key.tenant.clone(),
            key.prefix.clone(),
            time(key.created_at),
            key.revoked_at.map_or_else(|| "-".to_string(), time),
        ]);
    }
    table.render()
}

/// A stored time (Unix ms) to the second, in UTC; the raw number if it is out of range.
fn time(ms: i64) -> String {
    Timestamp::from_second(ms.div_euclid(1000)).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_follow_the_namespace_rule() {
        // The longest namespace's tenant: `k8s-` and 63 characters.
        let longest_namespace = format!("k8s-{}", "a".repeat(63));
        for good in ["default", "team-a", "a", "x1", &longest_namespace] {
            assert!(check_tenant(good).is_ok(), "{good}");
        }
        for bad in ["", "Team", "-a", "a-", "a_b", "a b", &"a".repeat(68)] {
            assert!(check_tenant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payer_addresses_are_bech32() {
        for good in ["wasm1qypqxpq9qcrsszg2pvxq6rs0zqg3yyc5", "agora1zqqqqqqqqq"] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "wasm",
            "wasm1",
            "Wasm1qqqqqqqq",
            "wasm1qqqqqqqb",
            "1qqqqqqqqq",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_shows_prefixes_and_times() {
        let text = keys_table(&[ApiKeyInfo {
            tenant: "team-a".into(),
            prefix: "agora_1a2b3c".into(),
            created_at: 1_700_000_000_000,
            revoked_at: None,
        }]);
        assert!(text.contains("team-a"), "{text}");
        assert!(text.contains("agora_1a2b3c"), "{text}");
        assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
    }
}
