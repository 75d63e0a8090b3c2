//! Request rate limits: a token bucket per API key, per node token and per client address.
//!
//! Three budgets, because the callers differ: people and their scripts use API keys; agents send a
//! heartbeat every few seconds and hold long-polls, so node tokens get a larger budget of their
//! own; and requests that carry no credential (registration, its challenge, and anything sent
//! without a key) are counted per client address, the only thing that tells such callers apart.
//! `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are never limited: probes and scrapers
//! must see the hub even when clients are being turned away.
//!
//! A bucket holds up to `burst` tokens and gains `per_second` tokens a second; each request takes
//! one. An empty bucket answers `429 rate_limited` with `Retry-After` (whole seconds until the
//! next token). Buckets are keyed by the SHA-256 of the credential, never the credential itself,
//! so the limiter's memory holds nothing worth stealing.
//!
//! Only credentials that have authenticated get a bucket. A request with a credential the limiter
//! has not seen succeed needs its client address to have budget left (it is not charged for it),
//! and every `401` is charged to the address. Otherwise a client could send a fresh made-up key
//! with each request, get a full bucket every time, and fill the table; this way a client guessing
//! keys is stopped by its address's budget, while the keys that work keep their own. (With a
//! credential budget turned off nothing is remembered, so every such request needs the address's
//! budget.) The table is bounded in any case: buckets that have refilled (idle long enough to be
//! indistinguishable from new ones) are swept out as time passes, and when the table is full
//! the least recently used eighth is dropped.
//!
//! Limits are kept in memory, per hub replica: with several replicas behind a load balancer a
//! client may get up to the budget from each.

use std::{
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use crds::rest::{ErrorBody, ErrorDetail};
use sha2::{Digest, Sha256};

/// How often, at most, a table is swept of refilled buckets.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Routes that are never limited: liveness, readiness, metrics and the API description.
const UNLIMITED_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// A sustained rate and a burst: at most `burst` requests at once, then `per_second` on average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: u32,
}

impl Rate {
    /// A rate of `per_second` requests a second (above zero, finite) with bursts of up to `burst`
    /// requests (at least one).
    pub fn new(per_second: f64, burst: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            per_second.is_finite() && per_second > 0.0,
            "a rate limit needs a positive number of requests per second, not {per_second}"
        );
        anyhow::ensure!(burst >= 1, "a rate limit's burst must be at least 1");
        Ok(Self { per_second, burst })
    }

    /// Requests per second, sustained.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Requests allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// A budget as written on the command line: `RPS/BURST` (`50/100`) or `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSetting(pub Option<Rate>);

impl std::str::FromStr for RateSetting {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        let (rate, burst) = text.split_once('/').ok_or_else(|| {
            anyhow::anyhow!(
                "expected REQUESTS_PER_SECOND/BURST (e.g. 50/100) or `off`, not {text:?}"
            )
        })?;
        let rate: f64 = rate
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{rate:?} is not a number of requests per second"))?;
        let burst: u32 = burst
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{burst:?} is not a whole number of requests"))?;
        Ok(Self(Some(Rate::new(rate, burst)?)))
    }
}

/// The hub's rate limits; `None` turns a budget off.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    /// Per API key (the REST API).
    pub api_key: Option<Rate>,
    /// Per node token (the agent protocol: heartbeats, long-polls, status reports).
    pub node: Option<Rate>,
    /// Per client address, for requests without a credential (registration) and failed
    /// authentications. IPv6 clients are counted per /64, the block one subscriber gets.
    pub anonymous: Option<Rate>,
    /// The most buckets kept per budget; bounds the limiter's memory (about 100 bytes a bucket).
    pub max_tracked: usize,
}

impl Default for RateLimits {
    /// Budgets that no well-behaved client reaches: a person's script makes a few calls a second,
    /// an agent one heartbeat every few seconds plus its long-poll, and a node registers once per
    /// start.
    fn default() -> Self {
        Self {
            api_key: Some(Rate {
                per_second: 50.0,
                burst: 100,
            }),
            node: Some(Rate {
                per_second: 200.0,
                burst: 400,
            }),
            anonymous: Some(Rate {
                per_second: 5.0,
                burst: 20,
            }),
            max_tracked: 100_000,
        }
    }
}

impl RateLimits {
    /// No limits at all (in-process tests that poll in tight loops by design).
    pub fn unlimited() -> Self {
        Self {
            api_key: None,
            node: None,
            anonymous: None,
            max_tracked: RateLimits::default().max_tracked,
        }
    }
}

/// The client's address, as the hub's listener saw it; the key of the anonymous budget. Requests
/// that arrive without one (a router driven in-process) are not limited by address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// One token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: &Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// Adds the tokens earned since the last update, up to the burst.
    fn refill(&mut self, rate: &Rate, now: Instant) {
        let earned = now.saturating_duration_since(self.updated).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + earned).min(f64::from(rate.burst));
        self.updated = now;
    }

    /// How long until the bucket holds one whole token.
    fn wait(&self, rate: &Rate) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0) / rate.per_second).min(86_400.0))
    }

    /// Whether the bucket would be full by `now`: then it is the same as no bucket at all.
    fn refilled(&self, rate: &Rate, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.updated).as_secs_f64() * rate.per_second;
        self.tokens + earned >= f64::from(rate.burst)
    }
}

/// The buckets of one budget.
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    last_sweep: Instant,
}

/// One budget: a rate and a bounded table of buckets.
struct Budget<K> {
    rate: Option<Rate>,
    max_tracked: usize,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq + Copy> Budget<K> {
    fn new(rate: Option<Rate>, max_tracked: usize) -> Self {
        Self {
            rate,
            max_tracked: max_tracked.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Runs `f` on the table, after sweeping it when it is due.
    fn with_table<T>(&self, rate: &Rate, now: Instant, f: impl FnOnce(&mut Table<K>) -> T) -> T {
        // A panic while holding the lock cannot leave a bucket half-updated in a way that matters
        // (the worst is one request counted twice), so a poisoned lock is used as it is.
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.saturating_duration_since(table.last_sweep) >= SWEEP_INTERVAL {
            table.buckets.retain(|_, b| !b.refilled(rate, now));
            table.last_sweep = now;
        }
        f(&mut table)
    }

    /// Makes room for one more bucket: drops refilled ones, then, if the table is still full, the
    /// least recently used eighth (those clients start again with a full bucket, which is the
    /// price of bounded memory; it takes more distinct active credentials than `max_tracked`).
    fn make_room(&self, table: &mut Table<K>, rate: &Rate, now: Instant) {
        if table.buckets.len() < self.max_tracked {
            return;
        }
        table.buckets.retain(|_, b| !b.refilled(rate, now));
        table.last_sweep = now;
        if table.buckets.len() < self.max_tracked {
            return;
        }
        let mut ages: Vec<(Instant, K)> = table
            .buckets
            .iter()
            .map(|(key, bucket)| (bucket.updated, *key))
            .collect();
        let evict = (ages.len() / 8).max(1);
        ages.select_nth_unstable_by_key(evict - 1, |(updated, _)| *updated);
        for (_, key) in &ages[..evict] {
            table.buckets.remove(key);
        }
    }

    /// Takes a token from `key`'s bucket, creating a full one if there is none.
    fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        self.with_table(&rate, now, |table| {
            if !table.buckets.contains_key(&key) {
                self.make_room(table, &rate, now);
            }
            let bucket = table
                .buckets
                .entry(key)
                .or_insert_with(|| Bucket::full(&rate, now));
            take_from(bucket, &rate, now)
        })
    }

    /// Takes a token from `key`'s bucket if it has one; `None` when it has no bucket, which is
    /// always the case when the budget is off (nothing is tracked then).
    fn take_existing(&self, key: K, now: Instant) -> Option<Result<(), Duration>> {
        let rate = self.rate?;
        self.with_table(&rate, now, |table| {
            table
                .buckets
                .get_mut(&key)
                .map(|bucket| take_from(bucket, &rate, now))
        })
    }

    /// Whether `key` could take a token now, without taking it.
    fn peek(&self, key: K, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        self.with_table(&rate, now, |table| match table.buckets.get_mut(&key) {
            None => Ok(()),
            Some(bucket) => {
                bucket.refill(&rate, now);
                if bucket.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(bucket.wait(&rate))
                }
            }
        })
    }

    /// Takes a token for a request already served, creating the bucket if needed. Requests in
    /// flight together may overdraw the bucket; the debt is capped at one burst so that a client
    /// never waits longer than two bursts' worth.
    fn charge(&self, key: K, now: Instant) {
        let Some(rate) = self.rate else {
            return;
        };
        self.with_table(&rate, now, |table| {
            if !table.buckets.contains_key(&key) {
                self.make_room(table, &rate, now);
            }
            let bucket = table
                .buckets
                .entry(key)
                .or_insert_with(|| Bucket::full(&rate, now));
            bucket.refill(&rate, now);
            bucket.tokens = (bucket.tokens - 1.0).max(-f64::from(rate.burst));
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .buckets
            .len()
    }
}

fn take_from(bucket: &mut Bucket, rate: &Rate, now: Instant) -> Result<(), Duration> {
    bucket.refill(rate, now);
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(bucket.wait(rate))
    }
}

/// Which budget a credential draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CredentialKind {
    ApiKey,
    NodeToken,
}

/// Every budget of one hub replica.
pub struct RateLimiter {
    limits: RateLimits,
    api_keys: Budget<[u8; 32]>,
    nodes: Budget<[u8; 32]>,
    addresses: Budget<IpAddr>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            api_keys: Budget::new(limits.api_key, limits.max_tracked),
            nodes: Budget::new(limits.node, limits.max_tracked),
            addresses: Budget::new(limits.anonymous, limits.max_tracked),
            limits,
        }
    }

    /// The limits this limiter enforces.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    fn credentials(&self, kind: CredentialKind) -> (&Budget<[u8; 32]>, Option<Rate>) {
        match kind {
            CredentialKind::ApiKey => (&self.api_keys, self.limits.api_key),
            CredentialKind::NodeToken => (&self.nodes, self.limits.node),
        }
    }
}

/// The address key of a client: IPv4 addresses as they are, IPv6 ones by their /64 (one
/// subscriber's block, which a client can hop around in at will), IPv4-mapped IPv6 as IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

/// The bearer credential of a request, if it carries one.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The middleware: answers `429` when the request's budget is spent, and otherwise passes it on
/// and charges it.
pub async fn enforce(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path(), |p| p.as_str());
    if UNLIMITED_ROUTES.contains(&path) {
        return next.run(req).await;
    }
    let kind = if path.starts_with("/v1/agent/") {
        CredentialKind::NodeToken
    } else {
        CredentialKind::ApiKey
    };
    let address = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|info| info.0.0.ip())
        .or_else(|| {
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        })
        .map(address_key);
    let credential: Option<[u8; 32]> = bearer(&req).map(|token| Sha256::digest(token).into());
    let now = Instant::now();

    let Some(credential) = credential else {
        // No credential: the client's address is all there is to count by.
        if let Some(address) = address
            && let Err(wait) = limiter.addresses.take(address, now)
        {
            return too_many(wait, "this client address", limiter.limits.anonymous);
        }
        return next.run(req).await;
    };

    let (budget, rate) = limiter.credentials(kind);
    let known = match budget.take_existing(credential, now) {
        Some(Ok(())) => true,
        Some(Err(wait)) => {
            let whose = match kind {
                CredentialKind::ApiKey => "this API key",
                CredentialKind::NodeToken => "this node token",
            };
            return too_many(wait, whose, rate);
        }
        None => {
            // Not seen to authenticate yet: it may be made up, so the address vouches for it.
            if let Some(address) = address
                && let Err(wait) = limiter.addresses.peek(address, now)
            {
                return too_many(wait, "this client address", limiter.limits.anonymous);
            }
            false
        }
    };
    let response = next.run(req).await;
    let done = Instant::now();
    if response.status() == StatusCode::UNAUTHORIZED {
        if let Some(address) = address {
            limiter.addresses.charge(address, done);
        }
    } else if !known {
        budget.charge(credential, done);
    }
    response
}

/// The `429` answer, in the API's error shape, with `Retry-After` in whole seconds (at least 1).
fn too_many(wait: Duration, whose: &str, rate: Option<Rate>) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let limit = rate.map_or_else(String::new, |r| {
        format!(
            " (limit: {} requests a second, bursts of {})",
            r.per_second, r.burst
        )
    });
    let body = ErrorBody {
        error: ErrorDetail {
            code: "rate_limited".into(),
            message: format!("too many requests for {whose}{limit}; retry after {seconds} s"),
            field: None,
        },
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate::new(per_second, burst).unwrap()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let budget = Budget::new(Some(rate(2.0, 3)), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(budget.take(1u8, t0).is_ok());
        }
        let wait = budget.take(1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(budget.take(1, t0 + Duration::from_millis(499)).is_err());
        assert!(budget.take(1, t0 + Duration::from_millis(1000)).is_ok());
        // Another key has its own bucket.
        assert!(budget.take(2, t0).is_ok());
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let budget = Budget::new(Some(rate(1.0, 5)), 64);
        let t0 = Instant::now();
        for key in 0..10_000u32 {
            assert!(budget.take(key, t0).is_ok());
            assert!(budget.len() <= 64);
        }
        // The newest client kept its bucket: eviction takes the least recently used.
        for _ in 0..4 {
            assert!(budget.take(9_999, t0).is_ok());
        }
        assert!(budget.take(9_999, t0).is_err());
    }

    #[test]
    fn refilled_buckets_are_swept() {
        let budget = Budget::new(Some(rate(10.0, 2)), 1000);
        let t0 = Instant::now();
        for key in 0..100u32 {
            budget.take(key, t0).unwrap();
        }
        assert_eq!(budget.len(), 100);
        // Long after, one request triggers a sweep of every bucket that refilled.
        budget.take(1000, t0 + SWEEP_INTERVAL).unwrap();
        assert_eq!(budget.len(), 1);
    }

    #[test]
    fn charges_overdraw_at_most_one_burst() {
        let budget = Budget::new(Some(rate(1.0, 2)), 10);
        let t0 = Instant::now();
        for _ in 0..100 {
            budget.charge(7u8, t0);
        }
        assert_eq!(budget.peek(7, t0).unwrap_err(), Duration::from_secs(3));
    }

    #[test]
    fn no_rate_means_no_limit_and_no_memory() {
        let budget = Budget::new(None, 10);
        let t0 = Instant::now();
        for key in 0..100u32 {
            assert!(budget.take(key, t0).is_ok());
            budget.charge(key, t0);
        }
        assert_eq!(budget.len(), 0);
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn settings_read_as_rate_and_burst() {
        assert_eq!(
            "50/100".parse::<RateSetting>().unwrap(),
            RateSetting(Some(rate(50.0, 100)))
        );
        assert_eq!(
            " 0.5 / 2 ".parse::<RateSetting>().unwrap(),
            RateSetting(Some(rate(0.5, 2)))
        );
        assert_eq!("off".parse::<RateSetting>().unwrap(), RateSetting(None));
        for bad in ["50", "x/1", "1/x", "0/10", "5/0", "-1/3", ""] {
            assert!(bad.parse::<RateSetting>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_must_be_positive() {
        assert!(Rate::new(0.0, 1).is_err());
        assert!(Rate::new(f64::NAN, 1).is_err());
        assert!(Rate::new(1.0, 0).is_err());
        assert!(Rate::new(0.5, 1).is_ok());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let response = too_many(Duration::from_millis(1200), "x", None);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = too_many(Duration::ZERO, "x", None);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
