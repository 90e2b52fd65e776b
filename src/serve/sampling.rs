//! Drawing a token on the host from one row of log-probabilities, per request (OpenAI's `temperature`,
//! `top_k`, `top_p`, `seed`): the compiled programs stay the same for every request, and each sequence
//! has its own seeded generator, so a seeded request gives the same tokens alone or in a busy batch.

use rand::rngs::StdRng;
use rand::Rng;

/// Per-request sampling. `temperature <= 0` (or `top_k == 1`) is greedy.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub seed: Option<u64>,
}

impl Sampling {
    pub fn greedy() -> Sampling {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, seed: None }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// Index of the largest value (the first on ties, as argmax on the device).
pub fn argmax(row: &[f32]) -> i64 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i64
}

/// The `n` largest entries of `row` (id, value), largest first.
pub fn top_n(row: &[f32], n: usize) -> Vec<(i64, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let n = n.min(row.len());
    let cmp = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i as i64, row[i])).collect()
}

/// Draws a token from log-probabilities `row` [vocab]: scale by 1/temperature, keep the top-k, then the
/// smallest set whose probability reaches top_p (the best token always stays), renormalise, draw.
pub fn draw(row: &[f32], s: &Sampling, rng: &mut StdRng) -> i64 {
    if s.is_greedy() {
        return argmax(row);
    }
    let t = s.temperature;
    let best = row[argmax(row) as usize];
    // Tokens more than 30 nats (after temperature) below the best carry < 1e-13 of the mass: left out, so
    // the sort below is over a handful of candidates, not the whole vocabulary.
    let mut cand: Vec<(usize, f32)> = row.iter().enumerate().filter(|(_, &v)| (v - best) / t > -30.0).map(|(i, &v)| (i, (v - best) / t)).collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if s.top_k > 0 {
        cand.truncate(s.top_k);
    }
    let weights: Vec<f64> = cand.iter().map(|(_, v)| (*v as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut keep = cand.len();
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, w) in weights.iter().enumerate() {
            if acc >= s.top_p as f64 * total {
                keep = i;
                break;
            }
            acc += w;
        }
        keep = keep.max(1);
    }
    let total: f64 = weights[..keep].iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for i in 0..keep {
        u -= weights[i];
        if u <= 0.0 {
            return cand[i].0 as i64;
        }
    }
    cand[keep - 1].0 as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn greedy_top_k_and_top_p() {
        let row = [-3.0f32, -0.1, -2.5, -5.0];
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(draw(&row, &Sampling::greedy(), &mut rng), 1);
        let k1 = Sampling { temperature: 1.0, top_p: 1.0, top_k: 1, seed: None };
        assert_eq!(draw(&row, &k1, &mut rng), 1);
        // top_p small: only the best token survives.
        let p = Sampling { temperature: 1.0, top_p: 0.05, top_k: 0, seed: None };
        for _ in 0..50 {
            assert_eq!(draw(&row, &p, &mut rng), 1);
        }
        // top_k 2: only ids 1 and 2 ever come out.
        let k2 = Sampling { temperature: 5.0, top_p: 1.0, top_k: 2, seed: None };
        for _ in 0..200 {
            assert!(matches!(draw(&row, &k2, &mut rng), 1 | 2));
        }
        assert_eq!(top_n(&row, 2), vec![(1, -0.1), (2, -2.5)]);
    }

    #[test]
    fn seeded_draws_repeat() {
        let row: Vec<f32> = (0..100).map(|i| -(i as f32) * 0.05).collect();
        let s = Sampling { temperature: 1.0, top_p: 0.9, top_k: 0, seed: Some(7) };
        let a: Vec<i64> = { let mut r = StdRng::seed_from_u64(7); (0..20).map(|_| draw(&row, &s, &mut r)).collect() };
        let b: Vec<i64> = { let mut r = StdRng::seed_from_u64(7); (0..20).map(|_| draw(&row, &s, &mut r)).collect() };
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x != 0), "temperature 1 over a flat row should not always pick the best");
    }
}
