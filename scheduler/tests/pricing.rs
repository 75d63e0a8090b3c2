//! Base prices per GPU class (`scheduler::pricing`): the EIP-1559-style rule, its rounding, its
//! bounds, convergence under a demand curve, persistence and parameter validation.

use scheduler::pricing::{
    ClassPrice, ClassUsage, PriceBook, PricingError, PricingParams, affordable, effective_price,
};

const H100: &str = "H100-80GB";

fn params() -> PricingParams {
    PricingParams {
        floor_micros: 0,
        initial_micros: 0,
        ..PricingParams::default()
    }
}

/// A class's epoch in which jobs kept taking it (some GPUs newly placed).
fn usage(class: &str, allocated: u64, offered: u64) -> ClassUsage {
    ClassUsage {
        class: class.into(),
        allocated_gpu_ms: allocated,
        offered_gpu_ms: offered,
        placed_gpus: allocated.min(1),
    }
}

/// A book holding `price` for H100.
fn book_at(params: PricingParams, price: u64) -> PriceBook {
    let entry = ClassPrice {
        class: H100.into(),
        base_micros: price,
        ..ClassPrice::default()
    };
    PriceBook::restore(params, [entry]).unwrap()
}

/// The H100 price after one epoch at `allocated / offered`.
fn next(params: PricingParams, price: u64, allocated: u64, offered: u64) -> u64 {
    let mut book = book_at(params, price);
    book.advance_epoch(&[usage(H100, allocated, offered)]);
    book.base_price(H100)
}

fn entry<'a>(book: &'a [ClassPrice], class: &str) -> &'a ClassPrice {
    book.iter().find(|e| e.class == class).unwrap()
}

/// SplitMix64: a small seeded generator, so the property loops are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly ordinary numbers, often the edges.
    fn amount(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - self.below(1000),
            3 => self.below(100),
            4 => self.next(),
            _ => self.below(100_000_000_000),
        }
    }
}

#[test]
fn at_target_the_price_holds() {
    for price in [0, 1, 7, 1_000_001, 2_500_000, u64::MAX] {
        for (allocated, offered) in [
            (8, 10),
            (80, 100),
            (4_000, 5_000),
            (u64::MAX / 5 * 4, u64::MAX / 5 * 5),
        ] {
            assert_eq!(
                next(params(), price, allocated, offered),
                price,
                "{price} at {allocated}/{offered}"
            );
        }
    }
    let mut book = book_at(params(), 3_000_000);
    book.advance_epoch(&[usage(H100, 8, 10)]);
    let snapshot = book.snapshot();
    assert_eq!(snapshot[0].utilization_bps, 8_000);
    assert_eq!(snapshot[0].change_bps, 0);
}

#[test]
fn full_utilization_raises_by_exactly_one_eighth_rounded_half_up() {
    assert_eq!(next(params(), 8_000_000, 10, 10), 9_000_000);
    assert_eq!(next(params(), 2_000_000, 3_600_000, 3_600_000), 2_250_000);
    // +125,000.125 rounds down, +125,000.5 (a tie) rounds up, +125,000.875 rounds up.
    assert_eq!(next(params(), 1_000_001, 10, 10), 1_125_001);
    assert_eq!(next(params(), 1_000_004, 10, 10), 1_125_005);
    assert_eq!(next(params(), 1_000_007, 10, 10), 1_125_008);
    // Tiny prices: +0.375 would round to 0, but a price off target always moves.
    assert_eq!(next(params(), 3, 10, 10), 4);
    assert_eq!(next(params(), 0, 10, 10), 1, "a zero price can climb");
    assert_eq!(next(params(), 4, 10, 10), 5, "+0.5 rounds up");
    // Over-allocation (samples taken at different moments) counts as 100%.
    assert_eq!(next(params(), 8_000_000, 11, 10), 9_000_000);
    assert_eq!(next(params(), 8_000_000, u64::MAX, 1), 9_000_000);

    let mut book = book_at(params(), 8_000_000);
    book.advance_epoch(&[usage(H100, 10, 10)]);
    let snapshot = book.snapshot();
    assert_eq!(
        (snapshot[0].utilization_bps, snapshot[0].change_bps),
        (10_000, 1_250)
    );
}

#[test]
fn zero_utilization_lowers_by_one_eighth_and_stops_at_the_floor() {
    assert_eq!(next(params(), 8_000_000, 0, 10), 7_000_000);
    // −125,000.125 → −125,000; −125,000.5 (a tie) → −125,001; −125,000.875 → −125,001.
    assert_eq!(next(params(), 1_000_001, 0, 10), 875_001);
    assert_eq!(next(params(), 1_000_004, 0, 10), 875_003);
    assert_eq!(next(params(), 1_000_007, 0, 10), 875_006);
    assert_eq!(next(params(), 1, 0, 10), 0);

    let floored = PricingParams {
        floor_micros: 1_000_000,
        initial_micros: 2_000_000,
        ..PricingParams::default()
    };
    let mut book = PriceBook::new(floored).unwrap();
    let mut prices = vec![book.base_price(H100)];
    for _ in 0..20 {
        book.advance_epoch(&[usage(H100, 0, 1_000)]);
        prices.push(book.base_price(H100));
    }
    assert_eq!(&prices[..4], &[2_000_000, 1_750_000, 1_531_250, 1_339_844]);
    assert_eq!(prices[5], 1_025_818);
    assert_eq!(prices[6], 1_000_000, "897,591 clamped to the floor");
    assert!(prices[6..].iter().all(|&p| p == 1_000_000));
    let last = &book.snapshot()[0];
    assert_eq!(
        (last.utilization_bps, last.change_bps),
        (0, 0),
        "held at the floor"
    );
}

#[test]
fn utilization_between_moves_proportionally_on_each_side_of_the_target() {
    // Target 80%: 90% is half-way to full (+6.25%), 40% half-way to idle (−6.25%).
    assert_eq!(next(params(), 8_000_000, 9, 10), 8_500_000);
    assert_eq!(next(params(), 8_000_000, 4, 10), 7_500_000);
    // Target 50% is EIP-1559 exactly: Δ = price · (u − T)/T / 8.
    let half = PricingParams {
        target_utilization_bps: 5_000,
        ..params()
    };
    assert_eq!(next(half, 8_000_000, 3, 4), 8_500_000);
    assert_eq!(next(half, 8_000_000, 1, 4), 7_500_000);
    // A target of 100% can only be met or missed from below.
    let full = PricingParams {
        target_utilization_bps: 10_000,
        ..params()
    };
    assert_eq!(next(full, 8_000_000, 10, 10), 8_000_000);
    assert_eq!(next(full, 8_000_000, 5, 10), 7_500_000);
    // Another step size.
    let doubling = PricingParams {
        max_change_bps: 10_000,
        ..params()
    };
    assert_eq!(next(doubling, 8_000_000, 10, 10), 16_000_000);
    assert_eq!(next(doubling, 8_000_000, 0, 10), 0);
}

#[test]
fn the_ceiling_holds() {
    let capped = PricingParams {
        ceiling_micros: Some(5_000_000),
        initial_micros: 4_000_000,
        ..PricingParams::default()
    };
    let mut book = PriceBook::new(capped).unwrap();
    book.advance_epoch(&[usage(H100, 10, 10)]);
    assert_eq!(book.base_price(H100), 4_500_000);
    for _ in 0..50 {
        book.advance_epoch(&[usage(H100, 10, 10)]);
        assert_eq!(book.base_price(H100), 5_000_000);
    }
    assert_eq!(book.snapshot()[0].change_bps, 0);
    // A ceiling equal to the floor pins the price.
    let pinned = PricingParams {
        floor_micros: 7,
        initial_micros: 7,
        ceiling_micros: Some(7),
        ..PricingParams::default()
    };
    assert_eq!(next(pinned, 7, 10, 10), 7);
    assert_eq!(next(pinned, 7, 0, 10), 7);
}

#[test]
fn no_capacity_keeps_the_price_and_new_classes_start_at_initial() {
    let start = PricingParams {
        initial_micros: 3_000_000,
        ..PricingParams::default()
    };
    let mut book = PriceBook::new(start).unwrap();
    assert_eq!(book.base_price(H100), 3_000_000);
    assert_eq!(book.base_price("never-seen"), 3_000_000);
    assert!(book.snapshot().is_empty());

    book.advance_epoch(&[usage(H100, 10, 10), usage("A100-40GB", 0, 10)]);
    assert_eq!(book.base_price(H100), 3_375_000);
    assert_eq!(book.base_price("A100-40GB"), 2_625_000);

    // H100 goes dark (no offered capacity), A100 is absent: both hold.
    book.advance_epoch(&[usage(H100, 5, 0), usage("RTX-4090", 0, 0)]);
    assert_eq!(book.base_price(H100), 3_375_000);
    assert_eq!(book.base_price("A100-40GB"), 2_625_000);
    assert_eq!(book.base_price("RTX-4090"), 3_000_000);
    let snapshot = book.snapshot();
    let classes: Vec<&str> = snapshot.iter().map(|e| e.class.as_str()).collect();
    assert_eq!(classes, ["A100-40GB", H100, "RTX-4090"], "sorted by class");
    assert!(
        snapshot
            .iter()
            .all(|e| e.utilization_bps == 0 && e.change_bps == 0)
    );

    book.advance_epoch(&[]);
    assert_eq!(book.base_price(H100), 3_375_000);
}

#[test]
fn usage_entries_of_one_class_are_summed() {
    let mut split = book_at(params(), 8_000_000);
    split.advance_epoch(&[usage(H100, 5, 5), usage("other", 0, 1), usage(H100, 4, 5)]);
    assert_eq!(split.base_price(H100), 8_500_000, "9 of 10 used");
    let mut saturating = book_at(params(), 8_000_000);
    saturating.advance_epoch(&[
        usage(H100, u64::MAX, u64::MAX),
        usage(H100, u64::MAX, u64::MAX),
    ]);
    assert_eq!(saturating.base_price(H100), 9_000_000);
}

#[test]
fn change_is_bounded_for_any_input() {
    let mut rng = Rng(0x5EED_1559);
    for case in 0..20_000 {
        let floor = if rng.below(3) == 0 { 0 } else { rng.amount() };
        let ceiling = match rng.below(3) {
            0 => None,
            _ => Some(floor.saturating_add(rng.amount())),
        };
        let params = PricingParams {
            target_utilization_bps: 1 + rng.below(10_000) as u32,
            max_change_bps: match rng.below(3) {
                0 => 1_250,
                1 => 10_000,
                _ => 1 + rng.below(10_000) as u32,
            },
            floor_micros: floor,
            ceiling_micros: ceiling,
            initial_micros: floor,
        };
        params.validate().unwrap();
        let price = rng.amount().clamp(floor, ceiling.unwrap_or(u64::MAX));
        let (allocated, offered) = (rng.amount(), rng.amount());

        let mut book = book_at(params, price);
        book.advance_epoch(&[usage(H100, allocated, offered)]);
        let after = book.base_price(H100);
        let last = &book.snapshot()[0];
        let context =
            format!("case {case}: {params:?} price {price} usage {allocated}/{offered} → {after}");

        assert!(after >= floor, "{context}");
        assert!(ceiling.is_none_or(|c| after <= c), "{context}");
        assert!(last.utilization_bps <= 10_000, "{context}");
        if offered == 0 {
            assert_eq!(after, price, "{context}");
            continue;
        }
        // |Δ| ≤ price · max_change + 1 micro-unit.
        let moved = u128::from(after.abs_diff(price)) * 10_000;
        let bound = u128::from(price) * u128::from(params.max_change_bps) + 10_000;
        assert!(moved <= bound, "{context}");
        // The direction follows the utilization.
        let used = u128::from(allocated.min(offered)) * 10_000;
        let wanted = u128::from(params.target_utilization_bps) * u128::from(offered);
        match used.cmp(&wanted) {
            std::cmp::Ordering::Greater => assert!(after >= price, "{context}"),
            std::cmp::Ordering::Less => assert!(after <= price, "{context}"),
            std::cmp::Ordering::Equal => assert_eq!(after, price, "{context}"),
        }
    }
}

/// Where the numbers are small enough for plain u128 arithmetic, the price matches the rule
/// computed directly: Δ = price · max_change/10⁴ · |u − T| / span, rounded half up, at least 1.
#[test]
fn matches_the_rule_computed_directly() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let params = PricingParams {
            target_utilization_bps: 1 + rng.below(10_000) as u32,
            max_change_bps: 1 + rng.below(10_000) as u32,
            ..params()
        };
        let price = rng.below(1 << 40);
        let offered = 1 + rng.below(1 << 32);
        let allocated = rng.below(offered + 1);

        let (t, m) = (
            u128::from(params.target_utilization_bps),
            u128::from(params.max_change_bps),
        );
        let used = u128::from(allocated) * 10_000;
        let wanted = t * u128::from(offered);
        let expected = if used == wanted {
            price
        } else {
            let (gap, span) = if used > wanted {
                (used - wanted, (10_000 - t) * u128::from(offered))
            } else {
                (wanted - used, wanted)
            };
            let numerator = u128::from(price) * m * gap;
            let denominator = 10_000 * span;
            let delta = ((2 * numerator + denominator) / (2 * denominator)).max(1) as u64;
            if used > wanted {
                price + delta
            } else {
                price.saturating_sub(delta)
            }
        };
        assert_eq!(
            next(params, price, allocated, offered),
            expected,
            "{params:?} price {price} usage {allocated}/{offered}"
        );
    }
}

#[test]
fn extreme_inputs_do_not_overflow() {
    let unbounded = PricingParams {
        max_change_bps: 10_000,
        ..params()
    };
    assert_eq!(next(unbounded, u64::MAX, u64::MAX, u64::MAX), u64::MAX);
    assert_eq!(next(unbounded, u64::MAX, 0, u64::MAX), 0);
    assert_eq!(
        next(params(), u64::MAX, 0, u64::MAX),
        u64::MAX - (u64::MAX / 8 + 1)
    );
    assert_eq!(next(params(), u64::MAX, u64::MAX - 1, u64::MAX), u64::MAX);
    assert_eq!(
        next(params(), u64::MAX / 2, u64::MAX, 1),
        u64::MAX / 2 + u64::MAX / 16 + 1
    );
    let mut book = book_at(params(), u64::MAX);
    book.advance_epoch(&[usage(H100, 1, u64::MAX)]);
    assert!(book.base_price(H100) < u64::MAX);
    assert!(book.snapshot()[0].change_bps < 0);
}

const GPUS: u64 = 1_000;
const HOUR_MS: u64 = 3_600_000;

/// GPU-milliseconds a 1,000-GPU class sells in a one-hour epoch at `price`: everything is wanted
/// below `x`, nothing from `x · (1 + w)` on, linearly in between (`w` in percent; 0 is a cliff).
/// Integer arithmetic only.
fn demand_gpu_ms(price: u64, x: u64, w_percent: u64) -> u64 {
    let capacity = GPUS * HOUR_MS;
    if price < x {
        return capacity;
    }
    let width = x * w_percent / 100;
    let over = price - x;
    if over >= width {
        return 0;
    }
    capacity * (width - over) / width
}

/// Runs `epochs` epochs from the default parameters (the price starts at the 0.01 floor).
fn simulate(x: u64, w_percent: u64, epochs: usize) -> Vec<u64> {
    let mut book = PriceBook::new(PricingParams::default()).unwrap();
    let mut trace = vec![book.base_price(H100)];
    for _ in 0..epochs {
        let sold = demand_gpu_ms(book.base_price(H100), x, w_percent);
        book.advance_epoch(&[usage(H100, sold, GPUS * HOUR_MS)]);
        trace.push(book.base_price(H100));
    }
    trace
}

fn units(micros: u64) -> String {
    format!("{:.4}", micros as f64 / 1e6) // floats only to print
}

#[test]
fn converges_where_demand_meets_the_target() {
    const X: u64 = 2_000_000; // demand saturates below 2.00 per GPU-hour

    // Demand falls to nothing over 25% above X: 80% utilization at X · (1 + 0.25 · 0.2) = 2.10.
    let equilibrium = 2_100_000;
    let trace = simulate(X, 25, 200);
    let first_close = trace
        .iter()
        .position(|&p| p.abs_diff(equilibrium) * 1_000 <= equilibrium)
        .unwrap();
    let tail = &trace[trace.len() - 50..];
    let (lo, hi) = (*tail.iter().min().unwrap(), *tail.iter().max().unwrap());
    println!(
        "linear demand (saturated below {}, none above {}): from {} within 0.1% of {} after {} epochs; last 50 epochs in [{}, {}]",
        units(X),
        units(X * 5 / 4),
        units(trace[0]),
        units(equilibrium),
        first_close,
        units(lo),
        units(hi)
    );
    assert!(first_close <= 60, "{first_close}");
    assert!(
        lo.abs_diff(equilibrium) <= 2 && hi.abs_diff(equilibrium) <= 2,
        "{lo}..{hi}"
    );

    // A cliff (everything below X, nothing at or above it): the price cannot settle but stays
    // within one step of X.
    let trace = simulate(X, 0, 200);
    let tail = &trace[trace.len() - 50..];
    let (lo, hi) = (*tail.iter().min().unwrap(), *tail.iter().max().unwrap());
    println!(
        "cliff demand at {}: last 50 epochs in [{}, {}]",
        units(X),
        units(lo),
        units(hi)
    );
    assert!(lo >= X * 7 / 8 && hi <= X * 9 / 8 + 1, "{lo}..{hi}");
    assert!(lo < X && hi >= X);
}

#[test]
fn restore_round_trips_the_snapshot() {
    let mut book = PriceBook::new(PricingParams::default()).unwrap();
    book.advance_epoch(&[usage(H100, 10, 10), usage("A100-40GB", 0, 10)]);
    book.advance_epoch(&[usage(H100, 9, 10), usage("RTX-4090", 3, 10)]);
    let snapshot = book.snapshot();
    assert_eq!(snapshot.len(), 3);
    assert_eq!(entry(&snapshot, H100).utilization_bps, 9_000);
    assert_eq!(entry(&snapshot, "RTX-4090").utilization_bps, 3_000);

    let restored = PriceBook::restore(*book.params(), snapshot.clone()).unwrap();
    assert_eq!(restored, book);
    assert_eq!(restored.snapshot(), snapshot);

    // Serde: the book persists as JSON and comes back identical.
    let json = serde_json::to_string(&book).unwrap();
    let back: PriceBook = serde_json::from_str(&json).unwrap();
    assert_eq!(back, book);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["params"]["target_utilization_bps"], 8_000);
    assert_eq!(value["classes"][1]["class"], H100);

    // Both go on the same way.
    let (mut a, mut b) = (book, back);
    for bk in [&mut a, &mut b] {
        bk.advance_epoch(&[usage(H100, 1, 10)]);
    }
    assert_eq!(a, b);
}

#[test]
fn restore_clamps_prices_and_refuses_duplicates() {
    let old = ClassPrice {
        class: H100.into(),
        base_micros: 50,
        utilization_bps: 10_000,
        change_bps: 1_250,
    };
    let raised_floor = PricingParams {
        floor_micros: 1_000,
        initial_micros: 1_000,
        ceiling_micros: Some(9_000),
        ..PricingParams::default()
    };
    let book = PriceBook::restore(raised_floor, [old.clone()]).unwrap();
    assert_eq!(book.base_price(H100), 1_000);
    let high = ClassPrice {
        base_micros: 1_000_000,
        ..old.clone()
    };
    assert_eq!(
        PriceBook::restore(raised_floor, [high])
            .unwrap()
            .base_price(H100),
        9_000
    );

    let err = PriceBook::restore(raised_floor, [old.clone(), old]).unwrap_err();
    assert_eq!(err, PricingError::DuplicateClass(H100.into()));
    assert!(err.to_string().contains(H100));

    // Deserializing validates too.
    let bad = r#"{"params":{"target_utilization_bps":0,"max_change_bps":1250,"floor_micros":0,"ceiling_micros":null,"initial_micros":0},"classes":[]}"#;
    let err = serde_json::from_str::<PriceBook>(bad).unwrap_err();
    assert!(err.to_string().contains("target_utilization_bps"), "{err}");
}

#[test]
fn params_validation_names_the_field() {
    assert_eq!(PricingParams::default().validate(), Ok(()));
    let d = PricingParams::default();
    let cases = [
        (
            PricingParams {
                target_utilization_bps: 0,
                ..d
            },
            "target_utilization_bps",
        ),
        (
            PricingParams {
                target_utilization_bps: 10_001,
                ..d
            },
            "target_utilization_bps",
        ),
        (
            PricingParams {
                max_change_bps: 0,
                ..d
            },
            "max_change_bps",
        ),
        (
            PricingParams {
                max_change_bps: 10_001,
                ..d
            },
            "max_change_bps",
        ),
        (
            PricingParams {
                initial_micros: d.floor_micros - 1,
                ..d
            },
            "initial_micros",
        ),
        (
            PricingParams {
                ceiling_micros: Some(d.floor_micros - 1),
                ..d
            },
            "ceiling_micros",
        ),
        (
            PricingParams {
                ceiling_micros: Some(20_000),
                initial_micros: 20_001,
                ..d
            },
            "initial_micros",
        ),
    ];
    for (params, field) in cases {
        let err = params.validate().unwrap_err();
        assert_eq!(err.field(), Some(field), "{params:?}");
        assert!(err.to_string().contains(field), "{err}");
        assert_eq!(PriceBook::new(params).unwrap_err(), err);
    }
    // The edges are valid.
    for params in [
        PricingParams {
            target_utilization_bps: 1,
            max_change_bps: 1,
            ..d
        },
        PricingParams {
            target_utilization_bps: 10_000,
            max_change_bps: 10_000,
            ..d
        },
        PricingParams {
            floor_micros: 0,
            initial_micros: 0,
            ceiling_micros: Some(0),
            ..d
        },
    ] {
        assert_eq!(params.validate(), Ok(()), "{params:?}");
    }
}

#[test]
fn a_job_pays_the_higher_of_ask_and_base_and_never_above_its_maximum() {
    assert_eq!(effective_price(2_000_000, 1_500_000), 2_000_000);
    assert_eq!(effective_price(1_000_000, 1_500_000), 1_500_000);
    assert_eq!(effective_price(0, 0), 0);
    assert!(affordable(1_500_000, 1_500_000));
    assert!(affordable(1_499_999, 1_500_000));
    assert!(!affordable(1_500_001, 1_500_000));

    // Through a book: the base price rises past the job's maximum while the ask stays put.
    let mut book = book_at(params(), 2_000_000);
    let (ask, max) = (1_800_000, 2_200_000);
    assert!(affordable(effective_price(ask, book.base_price(H100)), max));
    book.advance_epoch(&[usage(H100, 10, 10)]);
    assert_eq!(effective_price(ask, book.base_price(H100)), 2_250_000);
    assert!(!affordable(
        effective_price(ask, book.base_price(H100)),
        max
    ));
}

/// Above the target, the price rises only in an epoch in which jobs still took the class; falling
/// needs no buyer.
#[test]
fn above_target_the_price_rises_only_while_jobs_take_the_class() {
    let p = params();
    let held = |allocated: u64, offered: u64, placed: u64| {
        let mut book = book_at(p, 1_000_000);
        book.advance_epoch(&[ClassUsage {
            placed_gpus: placed,
            ..usage(H100, allocated, offered)
        }]);
        (book.base_price(H100), entry(&book.snapshot(), H100).clone())
    };
    // Saturated by work placed earlier, nothing new placed: the price holds, and says why.
    let (price, state) = held(100, 100, 0);
    assert_eq!(price, 1_000_000);
    assert_eq!((state.utilization_bps, state.change_bps), (10_000, 0));
    // One GPU placed in the epoch: the full rise.
    assert_eq!(held(100, 100, 1).0, 1_125_000);
    // Below the target a class falls with or without buyers.
    assert_eq!(held(0, 100, 0).0, 875_000);
    assert_eq!(held(0, 100, 0).0, next(p, 1_000_000, 0, 100));
}

/// Long jobs hold a class above the target while every job that could still arrive is priced out:
/// without the rule the price would climb every epoch; with it, it stops one step past the highest
/// price a job paid, and falls again once the long jobs end.
#[test]
fn long_jobs_do_not_drive_the_price_past_every_buyer() {
    let mut book = book_at(params(), 1_000_000);
    // Buyers take the class up to 1.5 per GPU-hour; long jobs keep it 90% allocated throughout.
    let highest_paid = 1_500_000;
    for _ in 0..200 {
        let placed = u64::from(book.base_price(H100) <= highest_paid);
        book.advance_epoch(&[ClassUsage {
            placed_gpus: placed,
            ..usage(H100, 90, 100)
        }]);
    }
    let price = book.base_price(H100);
    assert!(
        price > highest_paid && price <= highest_paid + highest_paid / 8,
        "{}",
        units(price)
    );
    // The long jobs end: it falls.
    book.advance_epoch(&[usage(H100, 0, 100)]);
    assert!(book.base_price(H100) < price);
}
