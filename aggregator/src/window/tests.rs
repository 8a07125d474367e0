//! Tests of the windows: when they close, how they roll up, what late points
//! become, and that nothing is lost or counted twice.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigil_domain::distribution::Distribution;

use super::*;

fn closed_at(windows: &mut Windows, watermark_s: u64) -> Vec<(u64, u64, u64, u64, bool)> {
    let mut closed: Vec<_> = windows
        .close(watermark_s)
        .into_iter()
        .map(|c| {
            (
                c.width_s,
                c.series,
                c.start_s,
                c.rollup.values.count(),
                c.correction,
            )
        })
        .collect();
    closed.sort_unstable();
    closed
}

#[test]
fn windows_close_once_their_end_plus_lateness_has_passed() {
    let mut windows = Windows::new(30);
    assert_eq!(windows.record(7, 105, 1.5, false), Ok(Arrival::OnTime));
    assert_eq!(windows.record(7, 109, 2.5, true), Ok(Arrival::OnTime));
    assert_eq!(windows.open_windows(), 1);
    assert!(
        closed_at(&mut windows, 139).is_empty(),
        "110 + 30 is not yet passed"
    );
    let closed = windows.close(140);
    assert_eq!(closed.len(), 1);
    let window = &closed[0];
    assert_eq!(
        (window.width_s, window.series, window.start_s),
        (10, 7, 100)
    );
    assert_eq!(window.rollup.values.count(), 2);
    assert_eq!(window.rollup.values.sum(), 4.0);
    assert_eq!(window.rollup.errors, 1);
    assert!(!window.correction);
    // Its minute is open until 120 + 30; the hour starts when the minute closes.
    assert_eq!(windows.open_windows(), 1);
    assert_eq!(closed_at(&mut windows, 150), [(60, 7, 60, 2, false)]);
}

#[test]
fn a_late_point_becomes_a_correction_at_every_closed_resolution() {
    let mut windows = Windows::new(30);
    windows.record(1, 105, 1.0, false).unwrap();
    assert_eq!(
        closed_at(&mut windows, 200),
        [(10, 1, 100, 1, false), (60, 1, 60, 1, false)]
    );
    assert_eq!(windows.record(1, 107, 5.0, false), Ok(Arrival::Late));
    assert_eq!(windows.late_points(), 1);
    // The 10 s and 1 min windows closed: corrections. The hour is still open.
    assert_eq!(
        closed_at(&mut windows, 201),
        [(10, 1, 100, 1, true), (60, 1, 60, 1, true)]
    );
    let hour = windows.close(3600 + 30);
    assert_eq!(hour.len(), 1);
    assert_eq!((hour[0].width_s, hour[0].rollup.values.count()), (3600, 2));
    assert!(!hour[0].correction);
}

#[test]
fn a_watermark_never_moves_back() {
    let mut windows = Windows::new(0);
    windows.record(1, 5, 1.0, false).unwrap();
    assert_eq!(closed_at(&mut windows, 10).len(), 1);
    windows.close(3);
    assert_eq!(windows.record(1, 6, 1.0, false), Ok(Arrival::Late));
}

#[test]
fn values_that_are_not_numbers_are_refused() {
    let mut windows = Windows::new(30);
    assert!(matches!(
        windows.record(1, 5, f64::INFINITY, false),
        Err(DistributionError::NotFinite { .. })
    ));
    assert!(windows.record(1, 5, f64::NAN, false).is_err());
    assert_eq!(
        windows.open_windows(),
        0,
        "no window opens for a refused value"
    );
    assert!(windows.close(100).is_empty(), "and no empty row leaves");
}

/// What a window holds, compared exactly (the float sum within rounding).
#[derive(Debug, Default)]
struct Expected {
    values: Distribution,
    errors: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However points and closes interleave, and however late points come,
    /// what leaves (windows plus corrections) adds up at every resolution to
    /// what went in: nothing lost, nothing twice.
    #[test]
    fn every_point_leaves_exactly_once_at_every_resolution(
        steps in prop::collection::vec(
            prop_oneof![
                (0..4u64, 0..8_000u64, -1e3..1e3f64, any::<bool>()).prop_map(Some),
                Just(None),
            ],
            1..400,
        ),
        lateness in 0..120u64,
    ) {
        let mut windows = Windows::new(lateness);
        let mut expected: BTreeMap<(u64, u64, u64), Expected> = BTreeMap::new();
        let mut got: BTreeMap<(u64, u64, u64), Rollup> = BTreeMap::new();
        let mut watermark = 0;
        let keep = |closed: Vec<Closed>, got: &mut BTreeMap<(u64, u64, u64), Rollup>| {
            for window in closed {
                got.entry((window.width_s, window.series, window.start_s))
                    .or_default()
                    .merge(&window.rollup);
            }
        };
        for step in steps {
            match step {
                Some((series, time, value, error)) => {
                    windows.record(series, time, value, error).unwrap();
                    for width in RESOLUTIONS {
                        let slot = expected.entry((width, series, time - time % width)).or_default();
                        slot.values.record(value).unwrap();
                        slot.errors += u64::from(error);
                    }
                }
                None => {
                    watermark += 500;
                    keep(windows.close(watermark), &mut got);
                }
            }
        }
        keep(windows.close(u64::MAX / 2), &mut got);
        prop_assert_eq!(windows.open_windows(), 0);
        prop_assert_eq!(got.len(), expected.len());
        for (key, want) in &expected {
            let have = &got[key];
            prop_assert_eq!(have.values.to_buckets(), want.values.to_buckets(), "{:?}", key);
            prop_assert_eq!(have.values.min(), want.values.min());
            prop_assert_eq!(have.values.max(), want.values.max());
            prop_assert_eq!(have.errors, want.errors);
            prop_assert!((have.values.sum() - want.values.sum()).abs() < 1e-6);
        }
    }
}
