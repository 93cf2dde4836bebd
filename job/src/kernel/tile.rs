//! The tile kernel: float32 dot products of a tile of queries against a panel of faces, fused
//! with the pruning test, so no score matrix is ever stored. One generic body is compiled once
//! per instruction-set level ([`super::dispatch::Level`]) with the widths that fill its registers.

/// Per-query pruning test in the dot domain: face `f` may enter the query's top-N (and must be
/// re-scored in f64) when `dot·s ≥ nx[f]·u + xn[f]·v + c`, where `nx` is the face's squared
/// norm and `xn` its norm. The constants fold in the current N-th score and a proven bound on
/// the float32 error, so the test never drops a face the f64 reference would keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Factor on the dot product.
    pub s: f32,
    /// Factor on the face's squared norm.
    pub u: f32,
    /// Factor on the face's norm.
    pub v: f32,
    /// Constant.
    pub c: f32,
}

impl Limit {
    /// Every face is a candidate.
    pub const ALWAYS: Limit = Limit {
        s: 0.0,
        u: 0.0,
        v: 0.0,
        c: f32::NEG_INFINITY,
    };
}

/// Packs faces `values` (row-major, `dim` each) into panels of `w` faces stored dimension-major
/// (`[panel][d][lane]`), zero-padding the last panel.
pub fn pack(values: &[f32], dim: usize, w: usize, out: &mut Vec<f32>) {
    let faces = values.len() / dim.max(1);
    let panels = faces.div_ceil(w);
    out.clear();
    out.resize(panels * dim * w, 0.0);
    for (f, x) in values.chunks_exact(dim).enumerate() {
        let (p, lane) = (f / w, f % w);
        let base = p * dim * w + lane;
        for (d, v) in x.iter().enumerate() {
            out[base + d * w] = *v;
        }
    }
}

/// Scores queries `queries[q*dim..]` (`QT` of them) against one packed panel of `W` faces and
/// returns, per query, the bit mask of the lanes passing its [`Limit`].
#[inline(always)]
pub fn tile<const QT: usize, const W: usize, const FMA: bool>(
    dim: usize,
    queries: &[f32],
    panel: &[f32],
    nx: &[f32],
    xn: &[f32],
    limits: &[Limit; QT],
) -> [u64; QT] {
    assert!(W <= 64 && queries.len() >= QT * dim && panel.len() >= dim * W);
    assert!(nx.len() >= W && xn.len() >= W);
    let mut acc = [[0.0f32; W]; QT];
    for d in 0..dim {
        // SAFETY: d < dim and panel.len() ≥ dim·W (asserted), so the W lanes are in bounds.
        let x: &[f32; W] = unsafe { &*(panel.as_ptr().add(d * W) as *const [f32; W]) };
        for (q, row) in acc.iter_mut().enumerate() {
            // SAFETY: q < QT and d < dim, and queries.len() ≥ QT·dim (asserted).
            let b = unsafe { *queries.get_unchecked(q * dim + d) };
            for w in 0..W {
                row[w] = if FMA {
                    b.mul_add(x[w], row[w])
                } else {
                    row[w] + b * x[w]
                };
            }
        }
    }
    let mut masks = [0u64; QT];
    for q in 0..QT {
        let l = limits[q];
        let mut m = 0u64;
        for w in 0..W {
            let rhs = nx[w] * l.u + xn[w] * l.v + l.c;
            m |= u64::from(acc[q][w] * l.s >= rhs) << w;
        }
        masks[q] = m;
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_dimension_major_with_zero_padding() {
        let values: Vec<f32> = (0..3 * 5).map(|v| v as f32).collect();
        let mut out = Vec::new();
        pack(&values, 5, 2, &mut out);
        assert_eq!(out.len(), 2 * 5 * 2);
        // Panel 0: faces 0 and 1; row d holds [face0[d], face1[d]].
        assert_eq!(&out[..4], &[0.0, 5.0, 1.0, 6.0]);
        // Panel 1: face 2 and a zero lane.
        assert_eq!(&out[10..14], &[10.0, 0.0, 11.0, 0.0]);
    }

    #[test]
    fn the_tile_matches_plain_dot_products() {
        let dim = 7;
        let queries: Vec<f32> = (0..2 * dim).map(|v| (v as f32 * 0.37).sin()).collect();
        let faces: Vec<f32> = (0..4 * dim).map(|v| (v as f32 * 0.11).cos()).collect();
        let mut panel = Vec::new();
        pack(&faces, dim, 4, &mut panel);
        let dots: Vec<f32> = (0..2)
            .flat_map(|q| {
                let faces = &faces;
                let queries = &queries;
                (0..4).map(move |f| {
                    (0..dim)
                        .map(|d| queries[q * dim + d] * faces[f * dim + d])
                        .sum::<f32>()
                })
            })
            .collect();
        // Threshold each query at face 1's dot: exactly the faces scoring at least that pass.
        let limits = [0, 1].map(|q| Limit {
            s: 1.0,
            u: 0.0,
            v: 0.0,
            c: dots[q * 4 + 1] - 1e-5,
        });
        let masks = tile::<2, 4, false>(dim, &queries, &panel, &[0.0; 4], &[0.0; 4], &limits);
        for q in 0..2 {
            let expected = (0..4)
                .filter(|f| dots[q * 4 + f] >= dots[q * 4 + 1] - 1e-5)
                .fold(0u64, |m, f| m | 1 << f);
            assert_eq!(masks[q], expected, "query {q}");
        }
    }
}
