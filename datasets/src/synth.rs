//! Synthetic, clustered face encodings for tests and benchmarks: `K` identities × `M` faces each,
//! unit-normalised, fully determined by the seed (and independent of how they are sharded).

use crate::encoding::{FaceRecord, FaceSource};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// Parameters of a synthetic dataset.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Number of identities (clusters).
    pub identities: u64,
    /// Faces per identity.
    pub per_identity: u64,
    /// Encoding dimension.
    pub dim: usize,
    /// Seed; the same seed gives the same faces.
    pub seed: u64,
    /// Id of the first face; faces are numbered consecutively.
    pub first_id: i64,
    /// Spread of faces around their identity's centre (before normalisation); 0.5 keeps same-identity
    /// faces well inside dlib's 0.6 match threshold for D = 128.
    pub spread: f32,
}

impl SynthSpec {
    /// Total number of faces.
    pub fn count(&self) -> u64 {
        self.identities * self.per_identity
    }

    /// The ids the faces get: `first_id ..= first_id + count - 1`.
    pub fn id_range(&self) -> std::ops::RangeInclusive<i64> {
        self.first_id..=self.first_id + self.count() as i64 - 1
    }

    /// Every fifth identity is a user, the rest actors, so filters have something to filter.
    pub fn source_of(identity: u64) -> FaceSource {
        if identity % 5 == 4 {
            FaceSource::User
        } else {
            FaceSource::Actor
        }
    }

    /// The faces of one identity (each identity has its own RNG stream, so generation can be parallel).
    pub fn identity_faces(&self, identity: u64) -> Vec<FaceRecord> {
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ identity.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let center = unit(&mut rng, self.dim, None, 0.0);
        let sigma = self.spread / (self.dim as f32).sqrt();
        (0..self.per_identity)
            .map(|m| FaceRecord {
                face_id: self.first_id + (identity * self.per_identity + m) as i64,
                source: Self::source_of(identity),
                encoding: unit(&mut rng, self.dim, Some(&center), sigma),
            })
            .collect()
    }

    /// All faces in id order.
    pub fn faces(&self) -> impl Iterator<Item = FaceRecord> + '_ {
        (0..self.identities).flat_map(move |k| self.identity_faces(k))
    }
}

fn unit(rng: &mut StdRng, dim: usize, center: Option<&[f32]>, sigma: f32) -> Vec<f32> {
    loop {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| {
                let noise: f32 = rng.sample(StandardNormal);
                match center {
                    Some(c) => c[i] + sigma * noise,
                    None => noise,
                }
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 1e-6 {
            v.iter_mut().for_each(|x| *x /= norm);
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_unit_and_clustered() {
        let spec = SynthSpec {
            identities: 3,
            per_identity: 4,
            dim: 16,
            seed: 7,
            first_id: 100,
            spread: 0.5,
        };
        let a: Vec<_> = spec.faces().collect();
        let b: Vec<_> = spec.faces().collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 12);
        assert_eq!(a[0].face_id, 100);
        assert_eq!(a[11].face_id, 111);
        for f in &a {
            let n: f32 = f.encoding.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>();
        // Same identity is closer than different identities.
        assert!(dot(&a[0].encoding, &a[1].encoding) > dot(&a[0].encoding, &a[4].encoding));
        let other_seed = SynthSpec {
            seed: 8,
            ..spec.clone()
        };
        assert_ne!(other_seed.faces().next(), a.first().cloned());
    }
}
