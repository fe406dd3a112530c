//! numpy's legacy `RandomState`, bit for bit, for the permutations the reference draws.
//!
//! The reference seeds numpy with `np.random.seed(seed)` and draws
//! `np.random.permutation(n)`. For an integer seed numpy's legacy seeding is MT19937's
//! `init_genrand(seed)`; `permutation(n)` shuffles `arange(n)` with the legacy Fisher-Yates
//! loop, drawing each index with `random_interval` (rejection sampling on the smallest
//! bit mask that covers the bound, one 32-bit draw per try). [`legacy_permutation`]
//! reproduces that sequence exactly; the golden files check it for 768 and 3072 elements.

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny, well-mixed, deterministic generator,
/// for the library's own draws (bootstrap resamples, sampling noise, test data). The
/// state is the seed; every draw first adds the golden-ratio increment.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box–Muller, the cosine half; two uniforms per draw).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Uniform in `0..n` (`n > 0`), unbiased (Lemire, "Fast Random Integer Generation in
    /// an Interval", 2019).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let mut product = u128::from(self.next_u64()) * u128::from(n);
        if (product as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (product as u64) < threshold {
                product = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (product >> 64) as usize
    }
}

/// The MT19937 Mersenne Twister, as numpy's legacy `RandomState` uses it.
#[derive(Clone, Debug)]
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;
    const MATRIX_A: u32 = 0x9908_b0df;
    const UPPER_MASK: u32 = 0x8000_0000;
    const LOWER_MASK: u32 = 0x7fff_ffff;

    /// Seeds the generator as `np.random.seed(seed)` does for an integer seed
    /// (MT19937 `init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..Self::N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self {
            state,
            index: Self::N,
        }
    }

    fn twist(&mut self) {
        for i in 0..Self::N {
            let y = (self.state[i] & Self::UPPER_MASK)
                | (self.state[(i + 1) % Self::N] & Self::LOWER_MASK);
            let mut next = self.state[(i + Self::M) % Self::N] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= Self::MATRIX_A;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// The next 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// The next 64-bit output as numpy builds it from two 32-bit draws (high word first).
    pub fn next_u64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        let low = u64::from(self.next_u32());
        (high << 32) | low
    }

    /// A uniform integer in `[0, max]`, as numpy's `random_interval` draws it.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        } else {
            loop {
                let value = self.next_u64() & mask;
                if value <= max {
                    return value;
                }
            }
        }
    }
}

/// `np.random.seed(seed); np.random.permutation(n)` with numpy's legacy generator.
///
/// # Returns
/// The permutation of `0..n` numpy returns, bit for bit.
pub fn legacy_permutation(seed: u32, n: usize) -> Vec<usize> {
    let mut rng = Mt19937::new(seed);
    permutation_from(&mut rng, n)
}

/// `RandomState.permutation(n)` continuing from the generator's current state, so that
/// several permutations can be drawn from one seed as the reference's constructor does.
pub fn permutation_from(rng: &mut Mt19937, n: usize) -> Vec<usize> {
    let mut values: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_interval(i as u64) as usize;
        values.swap(i, j);
    }
    values
}

/// The inverse of a permutation: `inverse[perm[i]] = i`.
pub fn invert_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    inverse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // First outputs of init_genrand(5489), the generator's documented default seed
        // (mt19937ar.c's test vector starts from init_by_array; these come from
        // C++ std::mt19937, whose default seed 5489 uses init_genrand).
        let mut rng = Mt19937::new(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        assert_eq!(rng.next_u32(), 581_869_302);
        assert_eq!(rng.next_u32(), 3_890_346_734);
        // The 10000th output of std::mt19937 is specified by the C++ standard.
        let mut rng = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn permutation_is_a_permutation_and_inverts() {
        for n in [0, 1, 2, 7, 100] {
            let perm = legacy_permutation(3, n);
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            let inverse = invert_permutation(&perm);
            for i in 0..n {
                assert_eq!(inverse[perm[i]], i);
            }
        }
    }
}
