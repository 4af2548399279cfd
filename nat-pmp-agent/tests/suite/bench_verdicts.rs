//! The bench's PASS/MISS logic (`benches/xdp/verdict.rs`, included here so
//! that its unit tests run with the suite): every verdict fails closed on
//! missing data and on an agent that never reported.

#[path = "../../benches/xdp/verdict.rs"]
mod verdict;

use verdict::{judge, judge_agent, missing, Verdict};

#[test]
fn an_empty_set_is_a_miss_with_the_reason() {
    assert_eq!(judge(&[], |_| true), Verdict::Miss);
    assert!(missing(&[]).unwrap().contains("no row"));
}

#[test]
#[expect(
    clippy::neg_cmp_op_on_partial_ord,
    reason = "the predicate a careless target would write"
)]
fn a_nan_or_an_infinity_is_a_miss_even_where_ok_would_accept_it() {
    // `NaN <= 1.5` is false but `!(NaN > 1.5)` is true: a predicate
    // written the other way round must not turn a NaN into a PASS.
    assert_eq!(judge(&[f64::NAN], |x| !(x > 1.5)), Verdict::Miss);
    assert_eq!(judge(&[1.0, f64::INFINITY], |_| true), Verdict::Miss);
    assert_eq!(judge(&[1.0, f64::NEG_INFINITY], |_| true), Verdict::Miss);
    assert!(missing(&[1.0, f64::NAN, f64::NAN])
        .unwrap()
        .starts_with("2 of 3"));
}

#[test]
fn finite_values_pass_only_when_every_one_meets_the_target() {
    assert_eq!(judge(&[1.0, 1.5], |x| x <= 1.5), Verdict::Pass);
    assert_eq!(judge(&[1.0, 1.51], |x| x <= 1.5), Verdict::Miss);
    assert_eq!(missing(&[1.0, 2.0]), None);
    assert_eq!(Verdict::of(true).text(), "**PASS**");
    assert_eq!(Verdict::of(false).text(), "**MISS**");
}

#[test]
fn a_missing_flood_row_is_a_miss() {
    // A flood row's rate is NaN when the row is absent: the ratio too.
    let ratio = f64::NAN / 3.0;
    assert_eq!(judge(&[ratio], |x| x >= 0.9), Verdict::Miss);
}

#[test]
fn the_agent_passes_only_when_it_reported_the_flood() {
    let under_1 = |x: f64| x < 1.0;
    assert_eq!(
        judge_agent(Some((5, Some(1000))), 0.3, under_1),
        (Verdict::Pass, None)
    );
    for (run, needle) in [
        (None, "Not measured"),
        (Some((0, None)), "no report"),
        (Some((0, Some(1000))), "no report"),
        (Some((5, None)), "could not be read"),
        (Some((5, Some(0))), "no opcode-0 drop"),
    ] {
        let (v, why) = judge_agent(run, 0.3, under_1);
        assert_eq!(v, Verdict::Miss, "{run:?}");
        assert!(why.unwrap().contains(needle), "{run:?}");
    }
    let (v, why) = judge_agent(Some((5, Some(1000))), f64::NAN, under_1);
    assert_eq!(v, Verdict::Miss);
    assert!(why.is_some());
    assert_eq!(
        judge_agent(Some((5, Some(1000))), 1.2, under_1),
        (Verdict::Miss, None)
    );
}
