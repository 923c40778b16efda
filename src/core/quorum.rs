//! Quorum counting for one replicated request (Dynamo §4.5). Pure: answers in, outcome out.
//!
//! A request goes to `n` replicas and needs `needed` successes (W for writes, R for reads).
//! The outcome is decided as early as possible: `Won` at the `needed`-th success, `Lost` as soon
//! as the replicas that have not answered can no longer make up the difference.
//! Invariant: successes + failures never exceed `n` (asserted: a replica answers once).

/// How a quorum stands after the answers seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Won,
    Lost,
}

/// Cluster-wide replication settings, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    pub n: usize,
    pub r: usize,
    pub w: usize,
}

/// Why N/R/W settings were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--replication {0} must be at least 1")]
    N(usize),
    #[error("--read-quorum {r} must be within 1..=N ({n})")]
    R { r: usize, n: usize },
    #[error("--write-quorum {w} must be within 1..=N ({n})")]
    W { w: usize, n: usize },
}

impl Replication {
    pub const DEFAULT: Replication = Replication { n: 3, r: 2, w: 2 };

    pub fn new(n: usize, r: usize, w: usize) -> Result<Replication, ConfigError> {
        if n < 1 {
            return Err(ConfigError::N(n));
        }
        if r < 1 || r > n {
            return Err(ConfigError::R { r, n });
        }
        if w < 1 || w > n {
            return Err(ConfigError::W { w, n });
        }
        Ok(Replication { n, r, w })
    }

    /// Whether every read quorum overlaps every write quorum (R + W > N).
    pub fn overlapping(&self) -> bool {
        self.r + self.w > self.n
    }
}

/// Counts the answers of one request's replicas.
#[derive(Clone, Debug)]
pub struct Tally {
    n: usize,
    needed: usize,
    ok: usize,
    failed: usize,
}

impl Tally {
    pub fn new(n: usize, needed: usize) -> Tally {
        assert!(needed >= 1 && needed <= n, "quorum {needed} of {n}");
        Tally {
            n,
            needed,
            ok: 0,
            failed: 0,
        }
    }

    pub fn success(&mut self) -> Outcome {
        self.ok += 1;
        self.check()
    }

    pub fn failure(&mut self) -> Outcome {
        self.failed += 1;
        self.check()
    }

    pub fn successes(&self) -> usize {
        self.ok
    }

    pub fn outcome(&self) -> Outcome {
        if self.ok >= self.needed {
            Outcome::Won
        } else if self.n - self.failed < self.needed {
            Outcome::Lost
        } else {
            Outcome::Pending
        }
    }

    fn check(&self) -> Outcome {
        assert!(
            self.ok + self.failed <= self.n,
            "more answers than replicas"
        );
        self.outcome()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        assert_eq!(Replication::new(3, 2, 2), Ok(Replication::DEFAULT));
        assert!(Replication::DEFAULT.overlapping());
        assert_eq!(Replication::new(0, 1, 1), Err(ConfigError::N(0)));
        assert_eq!(
            Replication::new(3, 4, 2),
            Err(ConfigError::R { r: 4, n: 3 })
        );
        assert_eq!(
            Replication::new(3, 2, 0),
            Err(ConfigError::W { w: 0, n: 3 })
        );
        assert!(!Replication::new(3, 1, 1)
            .map(|r| r.overlapping())
            .unwrap_or(true));
    }

    /// Table: a sequence of answers (true = success) and the outcome after each.
    #[test]
    fn outcomes_are_decided_as_early_as_possible() {
        use Outcome::*;
        let cases: &[(usize, usize, &[bool], &[Outcome])] = &[
            (3, 2, &[true, true], &[Pending, Won]),
            (3, 2, &[false, true, true], &[Pending, Pending, Won]),
            (3, 2, &[false, false], &[Pending, Lost]),
            (3, 2, &[true, false, false], &[Pending, Pending, Lost]),
            (3, 3, &[true, false], &[Pending, Lost]),
            (3, 1, &[false, false, true], &[Pending, Pending, Won]),
            (1, 1, &[false], &[Lost]),
            (
                5,
                3,
                &[true, false, true, false, true],
                &[Pending, Pending, Pending, Pending, Won],
            ),
        ];
        for (n, needed, answers, want) in cases {
            let mut t = Tally::new(*n, *needed);
            let got: Vec<Outcome> = answers
                .iter()
                .map(|ok| if *ok { t.success() } else { t.failure() })
                .collect();
            assert_eq!(&got, want, "n={n} needed={needed} answers={answers:?}");
        }
    }

    #[test]
    #[should_panic(expected = "more answers than replicas")]
    fn a_fourth_answer_of_three_is_a_bug() {
        let mut t = Tally::new(3, 2);
        for _ in 0..4 {
            t.failure();
        }
    }
}
