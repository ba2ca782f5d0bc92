//! Seeded fault dice: one roll per request, in arrival order, so a seed and a request
//! order always give the same faults (a failing test can be replayed).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A sandbox's fault configuration as the dice read it.
pub trait FaultMix {
    /// The sandbox's fault kinds.
    type Kind: Copy;
    /// Probability per request, 0.0–1.0.
    fn rate(&self) -> f64;
    /// Kinds with their relative weights.
    fn mix(&self) -> &[(Self::Kind, u32)];
    /// Seed of the generator.
    fn seed(&self) -> u64;
}

/// Implements [`FaultMix`] and the `uniform` / `only` constructors for a sandbox's fault
/// configuration: a `Default` struct with public `rate: f64`, `mix: Vec<(Kind, u32)>`
/// and `seed: u64` fields, over a kind with an `ALL` array. Both sandboxes keep their
/// own public type, with their own extra settings, so callers see no kit type.
#[macro_export]
macro_rules! fault_mix {
    ($config:ty => $kind:ty) => {
        impl $crate::FaultMix for $config {
            type Kind = $kind;

            fn rate(&self) -> f64 {
                self.rate
            }

            fn mix(&self) -> &[($kind, u32)] {
                &self.mix
            }

            fn seed(&self) -> u64 {
                self.seed
            }
        }

        impl $config {
            /// All kinds with equal weight at `rate`.
            pub fn uniform(rate: f64, seed: u64) -> Self {
                Self {
                    rate,
                    mix: <$kind>::ALL.iter().map(|k| (*k, 1)).collect(),
                    seed,
                    ..Self::default()
                }
            }

            /// Only `kind`, at `rate`.
            pub fn only(kind: $kind, rate: f64, seed: u64) -> Self {
                Self {
                    rate,
                    mix: vec![(kind, 1)],
                    seed,
                    ..Self::default()
                }
            }
        }
    };
}

/// The dice, with the configuration they were seeded from.
#[derive(Debug)]
pub struct Dice<C> {
    /// What the dice roll for (sandboxes read their other fault settings from it).
    pub config: C,
    rng: StdRng,
}

impl<C: FaultMix> Dice<C> {
    /// Dice seeded from `config.seed()`.
    pub fn new(config: C) -> Self {
        let rng = StdRng::seed_from_u64(config.seed());
        Self { config, rng }
    }

    /// Rolls for one request: a kind drawn by weight with probability `rate`. Both the
    /// hit and the kind are drawn on every roll, so the sequence does not depend on
    /// earlier hits.
    pub fn roll(&mut self) -> Option<C::Kind> {
        let mix = self.config.mix();
        if self.config.rate() <= 0.0 || mix.is_empty() {
            return None;
        }
        let hit: f64 = self.rng.random();
        let total: u32 = mix.iter().map(|(_, w)| *w).sum();
        let mut pick = if total == 0 {
            0
        } else {
            self.rng.random_range(0..total)
        };
        if hit >= self.config.rate() || total == 0 {
            return None;
        }
        for (kind, weight) in mix {
            if pick < *weight {
                return Some(*kind);
            }
            pick -= weight;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        A,
        B,
    }

    impl Kind {
        const ALL: [Kind; 2] = [Kind::A, Kind::B];
    }

    #[derive(Default)]
    struct Faults {
        rate: f64,
        mix: Vec<(Kind, u32)>,
        seed: u64,
        /// A sandbox's own extra setting, kept by the constructors at its default.
        slow: bool,
    }

    crate::fault_mix!(Faults => Kind);

    fn faults(rate: f64, mix: Vec<(Kind, u32)>, seed: u64) -> Faults {
        Faults {
            rate,
            mix,
            seed,
            slow: false,
        }
    }

    #[test]
    fn same_seed_same_faults_at_the_rate() {
        let mix = || faults(0.3, vec![(Kind::A, 1), (Kind::B, 3)], 7);
        let (mut a, mut b) = (Dice::new(mix()), Dice::new(mix()));
        let ra: Vec<_> = (0..400).map(|_| a.roll()).collect();
        let rb: Vec<_> = (0..400).map(|_| b.roll()).collect();
        assert_eq!(ra, rb);
        let hits = ra.iter().filter(|r| r.is_some()).count();
        assert!((80..=160).contains(&hits), "{hits} hits of 400 at 30%");
        let bs = ra.iter().filter(|r| **r == Some(Kind::B)).count();
        assert!(
            bs > hits / 2,
            "weight 3 of 4 wins most hits: {bs} of {hits}"
        );
    }

    #[test]
    fn constructors_weigh_every_kind_or_one() {
        assert_eq!(Faults::uniform(0.5, 3).mix, [(Kind::A, 1), (Kind::B, 1)]);
        let only = Faults::only(Kind::B, 1.0, 3);
        assert_eq!(only.mix, [(Kind::B, 1)]);
        assert!(!only.slow);
        assert!((0..50).all(|_| Dice::new(Faults::only(Kind::B, 1.0, 3)).roll() == Some(Kind::B)));
    }

    #[test]
    fn no_rate_or_no_mix_never_faults() {
        let mut zero = Dice::new(faults(0.0, vec![(Kind::A, 1)], 1));
        let mut empty = Dice::new(faults(1.0, Vec::new(), 1));
        assert!((0..100).all(|_| zero.roll().is_none() && empty.roll().is_none()));
    }
}
