//! What a sweep's evaluation set holds (`Scoring.schema`): RewardBench 1 preference pairs or
//! RewardBench 2 best-of-N rows. The one parser of the field, for the coordinator (planning,
//! ingest, reports) and the worker (how to read and score a lease's examples).

use std::fmt;

use crate::v1::Scoring;

/// The evaluation-set schema of a sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EvalSchema {
    /// Preference pairs (`prompt`, `chosen`, `rejected`, `subset`): RewardBench 1 results
    /// (`run_rm.py`) and the hybrid-preferences sweep CSV. Written `rb1`; an empty field means it.
    #[default]
    Rb1,
    /// RewardBench 2 rows (`prompt`, lists `chosen` and `rejected`, `num_correct`, `subset`):
    /// every completion scored, `run_v2.py`'s results. Written `rb2`.
    Rb2,
}

impl EvalSchema {
    /// Every schema, in the order the names are listed in errors.
    pub const ALL: [EvalSchema; 2] = [EvalSchema::Rb1, EvalSchema::Rb2];

    /// The name as flags, presets and the wire spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            EvalSchema::Rb1 => "rb1",
            EvalSchema::Rb2 => "rb2",
        }
    }

    /// `rb1` (also empty) or `rb2`, surrounding whitespace ignored; the error names the value
    /// and the accepted names.
    pub fn parse(text: &str) -> Result<EvalSchema, String> {
        match text.trim() {
            "" | "rb1" => Ok(EvalSchema::Rb1),
            "rb2" => Ok(EvalSchema::Rb2),
            other => Err(format!(
                "schema {other:?}: expected 'rb1' (RewardBench 1 preference pairs) or 'rb2' \
                 (RewardBench 2 best-of-N rows)"
            )),
        }
    }
}

impl fmt::Display for EvalSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Scoring {
    /// The sweep's evaluation-set schema ([`EvalSchema::parse`] of `schema`).
    pub fn eval_schema(&self) -> Result<EvalSchema, String> {
        EvalSchema::parse(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_empty_is_rb1() {
        for schema in EvalSchema::ALL {
            assert_eq!(EvalSchema::parse(schema.as_str()), Ok(schema));
        }
        assert_eq!(EvalSchema::parse(""), Ok(EvalSchema::Rb1));
        assert_eq!(EvalSchema::parse(" rb2 "), Ok(EvalSchema::Rb2));
        let err = EvalSchema::parse("v2").unwrap_err();
        assert!(err.contains("\"v2\"") && err.contains("rb2"), "{err}");
        let scoring = Scoring {
            schema: "rb2".into(),
            ..Scoring::default()
        };
        assert_eq!(scoring.eval_schema(), Ok(EvalSchema::Rb2));
    }
}
