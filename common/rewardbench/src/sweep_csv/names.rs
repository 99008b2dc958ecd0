//! Experiment-name parsing of `fetch_evals_rewardbench.py`: `re.search(r"ID__([a-f0-9]+)__", name)`
//! and `re.search(r"SWAPS_(\d+)", name)`, and the budget rescaling of `--dataset_total_size`.

/// The training-subset id of an experiment or feature-file name: the first `ID__<hex>__` with
/// lowercase hex digits (`re.search(r"ID__([a-f0-9]+)__", name).group(1)`).
///
/// E.g. `rm-eval-helpsteer2-counts-tulu2_13b_rm_human_datamodel_counts_7000_ID__07add08aa33a4fa6a5294c7bc41ae1f9__SWAPS_4026`
/// → `07add08aa33a4fa6a5294c7bc41ae1f9`.
pub fn parse_uuid(name: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(offset) = name[from..].find("ID__") {
        let start = from + offset + 4;
        let hex_len = name[start..]
            .bytes()
            .take_while(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
            .count();
        // the greedy run is the only candidate: a shorter one is followed by a hex digit, not `_`
        if hex_len > 0 && name[start + hex_len..].starts_with("__") {
            return Some(&name[start..start + hex_len]);
        }
        from = from + offset + 1;
    }
    None
}

/// The budget of an experiment name: the digits of the first `SWAPS_<digits>`
/// (`re.search(r"SWAPS_(\d+)", name).group(1)`), kept as the string it is (`"0042"` stays
/// `"0042"`). Only ASCII digits count (Python's `\d` also takes other Unicode decimal digits).
pub fn parse_budget(name: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(offset) = name[from..].find("SWAPS_") {
        let start = from + offset + 6;
        let len = name[start..].bytes().take_while(u8::is_ascii_digit).count();
        if len > 0 {
            return Some(&name[start..start + len]);
        }
        from = from + offset + 1;
    }
    None
}

/// `int(int(budget) * 7000 / dataset_total_size)`: the budget rescaled to a 7000-row dataset
/// (true division, then truncation toward zero). `None` when `budget` is not a number, when
/// `dataset_total_size` is 0 (Python would raise `ZeroDivisionError`; the script never divides by
/// 0 since `if dataset_total_size:` skips rescaling), or when the numbers are too large for the
/// division to be exact in a double (beyond 2^53), where this would stop matching Python.
pub fn rescale_budget(budget: &str, dataset_total_size: u64) -> Option<i64> {
    const EXACT: u128 = 1 << 53;
    let b: u128 = budget.parse().ok()?;
    let numerator = b.checked_mul(7000)?;
    let size = u128::from(dataset_total_size);
    if size == 0 || numerator > EXACT || size > EXACT {
        return None;
    }
    // both operands are exact doubles, so this is Python's correctly rounded int / int
    let quotient = numerator as f64 / size as f64;
    Some(quotient.trunc() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_regexes() {
        let name = "rm-eval-helpsteer2-counts-tulu2_13b_rm_human_datamodel_counts_7000_ID__07add08aa33a4fa6a5294c7bc41ae1f9__SWAPS_4026";
        assert_eq!(parse_uuid(name), Some("07add08aa33a4fa6a5294c7bc41ae1f9"));
        assert_eq!(parse_budget(name), Some("4026"));
        assert_eq!(parse_uuid("x_ID__ab_c__ID__de__"), Some("de"));
        assert_eq!(parse_uuid("x_ID__ABC__"), None);
        assert_eq!(parse_uuid("x_ID____"), None);
        assert_eq!(parse_uuid("VALID__ab__"), Some("ab"));
        assert_eq!(parse_uuid("ID__abc"), None);
        assert_eq!(parse_budget("SWAPS_x_SWAPS_0042_SWAPS_9"), Some("0042"));
        assert_eq!(parse_budget("SWAPS_"), None);
        assert_eq!(parse_budget("SWAPS_١٢"), None);
    }

    #[test]
    fn rescales_like_python() {
        assert_eq!(rescale_budget("4026", 10160), Some(2773));
        assert_eq!(rescale_budget("10160", 10160), Some(7000));
        assert_eq!(rescale_budget("0", 10160), Some(0));
        assert_eq!(rescale_budget("0042", 7000), Some(42));
        assert_eq!(rescale_budget("1", 0), None);
        assert_eq!(rescale_budget("99999999999999999999999", 3), None);
    }
}
