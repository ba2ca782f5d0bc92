//! The optional values written beside the score: the win probability, the weighted
//! pipeline value and the qualification state. Each goes to a field of its own when the
//! portal names one, and is rewritten only when it changed. One type carries all of
//! them through the pipeline, the store and both adapters, so a new one is a variant
//! here and a key in `[portal.fields]`, not another parameter threaded through five
//! layers.

use serde::{Deserialize, Serialize};

/// One kind of optional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// "72 ≈ 18%": the score with its calibrated win rate (text).
    Probability,
    /// amount × the stage's coefficient (a decimal number).
    ExpectedValue,
    /// "B✓ A? N✓ T✗": the qualification state in short (text).
    Qualification,
}

impl Extra {
    /// Every kind, in the order the adapters write them.
    pub const ALL: [Extra; 3] = [
        Extra::Probability,
        Extra::ExpectedValue,
        Extra::Qualification,
    ];

    /// The key in `[portal.fields]` / `[portal.fields.deal]`, as messages name it.
    pub fn key(self) -> &'static str {
        match self {
            Extra::Probability => "probability",
            Extra::ExpectedValue => "expected_value",
            Extra::Qualification => "qualification",
        }
    }

    /// Goes to a number field (amoCRM wants a JSON number there, not text).
    pub fn is_number(self) -> bool {
        matches!(self, Extra::ExpectedValue)
    }
}

/// The optional values of one score, as computed for a write and as last written.
/// Flattened into [`super::ScoreWrite`] and the store's `Written`, so records written
/// before this type existed read unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraValues {
    /// The score with its win probability (`None`: no field, or no calibration yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<String>,
    /// The weighted value (`None`: no stage coefficients, amount or stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_value: Option<String>,
    /// The qualification state (`None`: the model has no qualification gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualification: Option<String>,
}

impl ExtraValues {
    /// The value of one kind, if there is one.
    pub fn get(&self, kind: Extra) -> Option<&str> {
        match kind {
            Extra::Probability => self.probability.as_deref(),
            Extra::ExpectedValue => self.expected_value.as_deref(),
            Extra::Qualification => self.qualification.as_deref(),
        }
    }

    /// Each value that is set, with its kind.
    pub fn iter(&self) -> impl Iterator<Item = (Extra, &str)> + '_ {
        Extra::ALL
            .into_iter()
            .filter_map(move |k| self.get(k).map(|v| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_extras_or_with_the_old_two_read_the_same() {
        let old: ExtraValues =
            serde_json::from_str(r#"{"probability":"72 ≈ 18%","expected_value":"25000"}"#).unwrap();
        assert_eq!(old.get(Extra::Probability), Some("72 ≈ 18%"));
        assert_eq!(old.get(Extra::Qualification), None);
        let set: Vec<_> = old.iter().map(|(k, _)| k.key()).collect();
        assert_eq!(set, ["probability", "expected_value"]);
        assert_eq!(
            serde_json::to_string(&ExtraValues::default()).unwrap(),
            "{}"
        );
    }
}
