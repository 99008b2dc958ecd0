//! Python's `repr(float)`, the one float formatting of the crate: result files, the sweep CSV,
//! and numbers printed or serialised by chat templates.

use std::fmt::Write as _;

/// `repr(x)` of a Python float: the shortest digit string that reads back as `x`, in positional
/// notation when the decimal exponent is in `[-4, 16)` (with `.0` added to integral values), else
/// in scientific notation with a signed exponent of at least two digits (`1e-05`, `2.5e+20`).
/// `nan`, `inf`, `-inf` for the non-finite values. numpy's `str(np.float64(x))`, which is what
/// pandas' `to_csv` writes for a float64 column, is the same string.
pub fn float_repr(x: f64) -> String {
    let mut out = String::new();
    write_float_repr(&mut out, x);
    out
}

fn write_float_repr(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
        return;
    }
    if x.is_sign_negative() {
        out.push('-');
    }
    if x == 0.0 {
        out.push_str("0.0");
        return;
    }
    let (digits, exponent) = shortest_digits(x.abs());
    let n = digits.len() as i32;
    // the decimal point sits after `decpt` digits: x = 0.DIGITS * 10^decpt
    let decpt = exponent + 1;
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
}

/// The shortest round-trip decimal digits of a positive finite `x` and the decimal exponent of
/// the first digit (`x ≈ d.ddd × 10^exponent`), chosen as Python's repr chooses them (David Gay's
/// `dtoa` mode 0): the shortest digit string that reads back as `x`, the closest to `x` among
/// those, and on an exact tie between two such strings the one with an even last digit.
///
/// Rust's `{:e}` gives the shortest closest digits too, but breaks that tie upwards
/// (`21.716323852539063` where Python writes `21.716323852539062`), so ties are detected from the
/// exact expansion and resolved to even.
fn shortest_digits(x: f64) -> (String, i32) {
    let split = |sci: &str| -> (String, i32) {
        let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        (
            digits,
            exponent.parse().expect("{:e} exponent is an integer"),
        )
    };
    let (digits, exponent) = split(&format!("{x:e}"));
    let n = digits.len();
    // A tie needs x to be exactly halfway between two n-digit decimals: its exact expansion then
    // has n + 1 significant digits, the last a 5 (at most 18 digits, since n <= 17).
    let (exact, exact_exp) = split(&format!("{x:.40e}"));
    let tail = &exact.as_bytes()[n..];
    if tail[0] != b'5' || tail[1..].iter().any(|&b| b != b'0') {
        return (digits, exponent);
    }
    let mut down = exact[..n].to_owned();
    let last_is_odd = (down.as_bytes()[n - 1] - b'0') % 2 == 1;
    let (mut candidate, candidate_exp) = if last_is_odd {
        // round the n digits up, carrying (999 -> 1000 moves the exponent)
        let mut bytes = down.into_bytes();
        let mut i = n;
        loop {
            if i == 0 {
                bytes.insert(0, b'1');
                bytes.pop();
                break (String::from_utf8(bytes).expect("ascii"), exact_exp + 1);
            }
            i -= 1;
            if bytes[i] == b'9' {
                bytes[i] = b'0';
            } else {
                bytes[i] += 1;
                break (String::from_utf8(bytes).expect("ascii"), exact_exp);
            }
        }
    } else {
        down.truncate(n);
        (down, exact_exp)
    };
    while candidate.len() > 1 && candidate.ends_with('0') {
        candidate.pop();
    }
    let text = format!("{}.{}e{}", &candidate[..1], &candidate[1..], candidate_exp);
    let text = text.replace(".e", "e");
    if text.parse::<f64>().ok() == Some(x) {
        (candidate, candidate_exp)
    } else {
        (digits, exponent)
    }
}

/// A float as Python's `json` writes it (`allow_nan=True`): `NaN`, `Infinity`, `-Infinity` for
/// the non-finite values, else [`float_repr`].
pub fn json_float(x: f64) -> String {
    let mut out = String::new();
    write_json_float(&mut out, x);
    out
}

pub(super) fn write_json_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        write_float_repr(out, x);
    }
}
