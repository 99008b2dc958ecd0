//! The fuzz targets' committed seeds plus deterministic byte mutations of them, replayed by plain
//! `cargo test` (the cargo-fuzz targets need an instrumented build, which only `scripts/fuzz`
//! makes): the hostile-input tests of every crate with a fuzz target call this.

/// How seeds are mutated: text inputs get syntax characters inserted, binary ones get the
/// msgpack/safetensors marker bytes that steer parsers into their length and type branches.
#[derive(Clone, Copy)]
pub enum Mutations {
    Text,
    Binary,
}

/// Every seed of `fuzz/corpus/<target>` followed by 2000 mutants of them (same list every run).
pub fn seeds_and_mutations(target: &str, mutations: Mutations) -> Vec<Vec<u8>> {
    let dir = crate::workspace_root().join("fuzz/corpus").join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    // a fixed linear congruential generator: reproducible without a rand dependency
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n.max(1)
    };
    for i in 0..2000 {
        let mut bytes = seeds[i % seeds.len()].clone();
        for _ in 0..1 + next(4) {
            match (next(3), mutations) {
                (0, _) if !bytes.is_empty() => {
                    let at = next(bytes.len());
                    bytes[at] = next(256) as u8;
                }
                (1, _) if !bytes.is_empty() => bytes.truncate(next(bytes.len())),
                (_, Mutations::Text) => {
                    let at = next(bytes.len() + 1);
                    bytes.insert(at, b"{}[]\"\\0,:%#-"[next(12)]);
                }
                (_, Mutations::Binary) if !bytes.is_empty() => {
                    let at = next(bytes.len());
                    bytes[at] = [0x00, 0x7f, 0x80, 0xff, 0xc0, 0xdc, 0xdd, 0xc7][next(8)];
                }
                _ => {}
            }
        }
        seeds.push(bytes);
    }
    seeds
}
