//! Latency histograms and the median ratio across rounds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency recorded exactly (60 s); anything longer is clamped to it, which
/// only happens when a run is already far past its goals.
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds, three significant digits.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid"))
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_US);
        self.record_us(us);
    }

    /// Records one latency given in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50/p95/p99/max in milliseconds.
    pub fn summary(&self) -> Percentiles {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: self.count(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: self.0.max() as f64 / 1000.0,
        }
    }
}

/// The percentiles a result reports.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Latencies recorded.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// What interleaved rounds gave: each system's result of each round, kept in the order
/// they ran. Every scenario compares systems the same way (per-round ratios, medians of
/// one system's rounds), so that lives here once.
pub struct Rounds<S, T> {
    runs: Vec<(S, usize, T)>,
}

impl<S: Copy + PartialEq, T> Rounds<S, T> {
    pub fn new() -> Self {
        Rounds { runs: Vec::new() }
    }

    pub fn push(&mut self, system: S, round: usize, out: T) {
        self.runs.push((system, round, out));
    }

    /// Every result of `system`, in round order.
    pub fn of(&self, system: S) -> Vec<&T> {
        self.runs
            .iter()
            .filter(|(s, _, _)| *s == system)
            .map(|(_, _, o)| o)
            .collect()
    }

    /// The median of `f` over `system`'s rounds.
    pub fn median_of(&self, system: S, f: impl Fn(&T) -> f64) -> f64 {
        median(&self.of(system).into_iter().map(f).collect::<Vec<_>>())
    }

    /// `f(a) / f(b)` in each of `rounds` rounds where both ran, as a [`Ratio`].
    pub fn ratio(&self, a: S, b: S, rounds: usize, f: impl Fn(&T) -> f64) -> Option<Ratio> {
        let get = |s: S, round: usize| {
            self.runs
                .iter()
                .find(|(x, r, _)| *x == s && *r == round)
                .map(|(_, _, o)| f(o))
        };
        let ratios: Vec<f64> = (0..rounds)
            .filter_map(|round| Some(get(a, round)? / get(b, round)?))
            .collect();
        Ratio::of(&ratios)
    }
}

impl<S: Copy + PartialEq, T> Default for Rounds<S, T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A ratio over rounds: the median and the spread.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ratio {
    /// Median of the per-round ratios.
    pub median: f64,
    /// Smallest per-round ratio.
    pub min: f64,
    /// Largest per-round ratio.
    pub max: f64,
    /// How many rounds gave a ratio.
    pub rounds: usize,
}

impl Ratio {
    /// The median, min and max of per-round ratios; `None` without any.
    pub fn of(values: &[f64]) -> Option<Ratio> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Ratio {
            median,
            min: v[0],
            max: v[n - 1],
            rounds: n,
        })
    }
}

/// The median of some values (0 when there are none).
pub fn median(values: &[f64]) -> f64 {
    Ratio::of(values).map_or(0.0, |r| r.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_pair_each_round_and_skip_rounds_one_side_lacks() {
        let mut r: Rounds<&str, f64> = Rounds::new();
        for (round, a, b) in [(0, 10.0, 5.0), (1, 30.0, 10.0), (2, 8.0, 4.0)] {
            r.push("a", round, a);
            r.push("b", round, b);
        }
        r.push("a", 3, 100.0);
        let ratio = r.ratio("a", "b", 4, |x| *x).unwrap();
        assert_eq!(
            (ratio.median, ratio.min, ratio.max, ratio.rounds),
            (2.0, 2.0, 3.0, 3)
        );
        assert_eq!(r.of("b"), [&5.0, &10.0, &4.0]);
        assert_eq!(r.median_of("b", |x| *x), 5.0);
        assert!(r.ratio("a", "c", 4, |x| *x).is_none());
    }

    #[test]
    fn ratio_median_of_odd_and_even_counts() {
        let r = Ratio::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((r.median, r.min, r.max, r.rounds), (2.0, 1.0, 3.0, 3));
        assert_eq!(Ratio::of(&[1.0, 4.0]).unwrap().median, 2.5);
        assert!(Ratio::of(&[]).is_none());
        assert!(Ratio::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn latency_percentiles_in_ms() {
        let mut l = Latency::default();
        for us in 1..=1000 {
            l.record_us(us * 10);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 5.0).abs() < 0.05, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() < 0.05, "{s:?}");
    }
}
