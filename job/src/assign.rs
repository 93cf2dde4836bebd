//! Which worker scans which shard: longest-processing-time-first by row count, deterministic, so
//! every process of a cluster computes the same assignment from the manifest alone.

use facematch_datasets::ShardInfo;

/// Returns, for each shard index, the worker that scans it.
pub fn assign_shards(shards: &[ShardInfo], workers: usize) -> Vec<usize> {
    let workers = workers.max(1);
    let mut order: Vec<usize> = (0..shards.len()).collect();
    order.sort_by(|&a, &b| shards[b].rows.cmp(&shards[a].rows).then(a.cmp(&b)));
    let mut load = vec![0u64; workers];
    let mut owner = vec![0usize; shards.len()];
    for shard in order {
        let (worker, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(w, l)| (**l, *w))
            .expect("at least one worker");
        owner[shard] = worker;
        load[worker] += shards[shard].rows.max(1);
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(rows: u64) -> ShardInfo {
        ShardInfo {
            path: String::new(),
            rows,
            bytes: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn balances_rows_and_covers_every_shard() {
        let shards: Vec<_> = [100, 10, 90, 20, 50, 50].into_iter().map(shard).collect();
        let owner = assign_shards(&shards, 2);
        let mut load = [0u64; 2];
        for (s, w) in owner.iter().enumerate() {
            load[*w] += shards[s].rows;
        }
        assert_eq!(load[0] + load[1], 320);
        assert!(load[0].abs_diff(load[1]) <= 20, "{load:?}");
        assert_eq!(assign_shards(&shards, 2), owner, "deterministic");
        assert!(assign_shards(&shards, 1).iter().all(|w| *w == 0));
    }
}
