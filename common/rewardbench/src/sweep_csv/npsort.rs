//! The row order pandas gives `sort_values("Overall", ascending=False)` on the sweep frame.
//!
//! In the reference the `Overall` column has dtype `object` (it is computed from the transposed
//! metrics frame), so pandas' `nargsort` runs numpy's *generic* introsort (`npy_aquicksort`, the
//! `kind="quicksort"` argsort of object arrays) with Python's `<` as the comparison. That sort is
//! not stable once more than 16 rows are sorted, so rows with equal `Overall` come out in an
//! order that depends on the algorithm's exact steps; [`argsort_quicksort`] takes the same steps
//! (median-of-three pivot, the bounds-checked partition scans of the generic version, insertion
//! sort below 17 elements, heapsort past `2 * floor(log2(n))` levels).

/// Partitions with more than this many elements (after the first) are split by quicksort.
const SMALL_QUICKSORT: usize = 15;

/// `floor(log2(n))` (`npy_get_msb`).
fn msb(mut n: usize) -> i32 {
    let mut depth = 0;
    while n > 1 {
        n >>= 1;
        depth += 1;
    }
    depth
}

/// `np.array(values, dtype=object).argsort(kind="quicksort")`: the permutation numpy's generic
/// introsort produces with `a < b` (Python float comparison: false whenever a NaN is involved).
pub fn argsort_quicksort(values: &[f64]) -> Vec<usize> {
    let mut t: Vec<usize> = (0..values.len()).collect();
    if t.len() < 2 {
        return t;
    }
    let less = |a: usize, b: usize| values[a] < values[b];
    let mut stack: Vec<(usize, usize, i32)> = Vec::new();
    let (mut pl, mut pr) = (0usize, values.len() - 1);
    let mut cdepth = msb(values.len()) * 2;
    loop {
        if cdepth < 0 {
            heapsort(&mut t[pl..=pr], &less);
        } else {
            while pr - pl > SMALL_QUICKSORT {
                let pm = pl + ((pr - pl) >> 1);
                if less(t[pm], t[pl]) {
                    t.swap(pm, pl);
                }
                if less(t[pr], t[pm]) {
                    t.swap(pr, pm);
                }
                if less(t[pm], t[pl]) {
                    t.swap(pm, pl);
                }
                let vp = t[pm];
                let mut pi = pl;
                let mut pj = pr - 1;
                t.swap(pm, pj);
                loop {
                    loop {
                        pi += 1;
                        if !(less(t[pi], vp) && pi < pj) {
                            break;
                        }
                    }
                    loop {
                        pj -= 1;
                        if !(less(vp, t[pj]) && pi < pj) {
                            break;
                        }
                    }
                    if pi >= pj {
                        break;
                    }
                    t.swap(pi, pj);
                }
                t.swap(pi, pr - 1);
                // keep the larger partition for later, go on with the smaller one
                cdepth -= 1;
                if pi - pl < pr - pi {
                    stack.push((pi + 1, pr, cdepth));
                    pr = pi - 1;
                } else {
                    stack.push((pl, pi - 1, cdepth));
                    pl = pi + 1;
                }
            }
            // insertion sort
            for i in pl + 1..=pr {
                let vi = t[i];
                let mut j = i;
                while j > pl && less(vi, t[j - 1]) {
                    t[j] = t[j - 1];
                    j -= 1;
                }
                t[j] = vi;
            }
        }
        match stack.pop() {
            Some((l, r, depth)) => {
                pl = l;
                pr = r;
                cdepth = depth;
            }
            None => break,
        }
    }
    t
}

/// numpy's `aheapsort` on a slice of indices (1-based heap, sift-down).
fn heapsort(t: &mut [usize], less: &impl Fn(usize, usize) -> bool) {
    let mut n = t.len();
    // a[k] is t[k - 1]
    let sift = |t: &mut [usize], mut i: usize, n: usize, tmp: usize| {
        let mut j = i << 1;
        while j <= n {
            if j < n && less(t[j - 1], t[j]) {
                j += 1;
            }
            if less(tmp, t[j - 1]) {
                t[i - 1] = t[j - 1];
                i = j;
                j += j;
            } else {
                break;
            }
        }
        t[i - 1] = tmp;
    };
    for l in (1..=n >> 1).rev() {
        let tmp = t[l - 1];
        sift(t, l, n, tmp);
    }
    while n > 1 {
        let tmp = t[n - 1];
        t[n - 1] = t[0];
        n -= 1;
        sift(t, 1, n, tmp);
    }
}

/// pandas' `nargsort(values, kind="quicksort", ascending=False, na_position="last")`: the
/// non-missing values (`None` or NaN are missing) reversed, argsorted with
/// [`argsort_quicksort`], mapped back and reversed again (which makes ties come out in their
/// original order when the sort itself keeps them, i.e. up to 16 values), then the missing
/// positions in their original order.
pub fn nargsort_descending(values: &[Option<f64>]) -> Vec<usize> {
    let present: Vec<usize> = (0..values.len())
        .filter(|&i| values[i].is_some_and(|x| !x.is_nan()))
        .collect();
    let missing = (0..values.len()).filter(|&i| values[i].is_none_or(f64::is_nan));
    let reversed_idx: Vec<usize> = present.iter().rev().copied().collect();
    let reversed_vals: Vec<f64> = reversed_idx
        .iter()
        .map(|&i| values[i].expect("present"))
        .collect();
    let mut indexer: Vec<usize> = argsort_quicksort(&reversed_vals)
        .into_iter()
        .map(|k| reversed_idx[k])
        .collect();
    indexer.reverse();
    indexer.extend(missing);
    indexer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts() {
        let v = [3.0, 1.0, 2.0, 1.0];
        assert_eq!(argsort_quicksort(&v), vec![1, 3, 2, 0]);
        let desc = nargsort_descending(&[Some(1.0), Some(3.0), None, Some(1.0), Some(f64::NAN)]);
        assert_eq!(desc, vec![1, 0, 3, 2, 4]);
        assert!(argsort_quicksort(&[]).is_empty());
    }

    #[test]
    fn heapsort_sorts() {
        let v: Vec<f64> = (0..50).map(|i| f64::from((i * 37) % 11)).collect();
        let mut t: Vec<usize> = (0..v.len()).collect();
        heapsort(&mut t, &|a, b| v[a] < v[b]);
        assert!(t.windows(2).all(|w| v[w[0]] <= v[w[1]]));
    }
}
