//! The PASS/MISS logic of the bench's targets, kept apart from measuring and
//! rendering so that it can be unit-tested: the suite includes this very file
//! and tests it (`tests/suite/bench_verdicts.rs`).
//!
//! Every verdict fails closed: nothing to judge (no row measured), a missing
//! or non-finite number, or an agent that never reported is a MISS with the
//! reason, never a PASS.

/// PASS/MISS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
}

impl Verdict {
    pub fn of(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Verdict::Pass => "**PASS**",
            Verdict::Miss => "**MISS**",
        }
    }
}

/// Why `values` cannot be judged, if so: there are none, or some are NaN or
/// infinite (a cell or a flood row absent, or a program that returned another
/// verdict than the one its cost is meant for).
pub fn missing(values: &[f64]) -> Option<String> {
    if values.is_empty() {
        return Some("Nothing to judge: no row of this target was measured in this run.".into());
    }
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    (bad > 0).then(|| {
        format!(
            "{bad} of {} numbers missing or not finite (a cell or a flood row absent, or its \
             program returned another verdict than the one its cost is meant for): nothing to \
             judge.",
            values.len()
        )
    })
}

/// PASS only when there is something to judge and every value is a finite
/// number that meets `ok`.
pub fn judge(values: &[f64], ok: impl Fn(f64) -> bool) -> Verdict {
    Verdict::of(missing(values).is_none() && values.iter().all(|&v| ok(v)))
}

/// Why the agent's run cannot be judged, if so: an agent that printed no
/// report, or whose last report counted no drop under the flood, was not
/// doing its job, and its low CPU share or memory proves nothing.
pub fn agent_silent(reports: usize, reported_drops: Option<u64>) -> Option<String> {
    match (reports, reported_drops) {
        (0, _) => Some(
            "The agent printed no report during the run: it was not doing its job, so its cost \
             proves nothing."
                .into(),
        ),
        (_, None) => Some(
            "The agent's last report could not be read (no opcode-0 drop count in it): its \
             cost proves nothing."
                .into(),
        ),
        (_, Some(0)) => Some(
            "The agent's last report counted no opcode-0 drop: it did not see the flood, so \
             its cost proves nothing."
                .into(),
        ),
        _ => None,
    }
}

/// A verdict on the agent: `value` judged by `ok` only when the agent was
/// measured at all (`run` is its report count and last drop count) and did
/// report; otherwise a MISS with the reason.
pub fn judge_agent(
    run: Option<(usize, Option<u64>)>,
    value: f64,
    ok: impl Fn(f64) -> bool,
) -> (Verdict, Option<String>) {
    let Some((reports, drops)) = run else {
        return (Verdict::Miss, Some("Not measured (no `--agent`).".into()));
    };
    if let Some(why) = agent_silent(reports, drops).or_else(|| missing(&[value])) {
        return (Verdict::Miss, Some(why));
    }
    (judge(&[value], ok), None)
}
