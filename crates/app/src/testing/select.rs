//! Which cases run: `filters` (texts, any of which is in the case's name or its file's path),
//! then one shard of a partition. Every case is in exactly one shard of a partition into N,
//! whichever way.

use super::model::{CaseRef, TestFile};
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// Shard K of N (1-based), by a stable hash of each case or by contiguous runs of equal count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// A case is in shard K when a hash of its file and name is K−1 modulo N: stable when cases
    /// are added elsewhere.
    Hash { k: usize, n: usize },
    /// The cases in order, cut into N runs whose sizes differ by at most one: even shards.
    Count { k: usize, n: usize },
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Partition, String> {
        let bad = || format!("'{s}': expected hash:K/N or count:K/N with 1 <= K <= N");
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let (k, n) = rest.split_once('/').ok_or_else(bad)?;
        let (k, n): (usize, usize) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        match kind {
            "hash" => Ok(Partition::Hash { k, n }),
            "count" => Ok(Partition::Count { k, n }),
            _ => Err(bad()),
        }
    }
}

/// The key a case is hashed by: its file (without a leading `./`) and its name.
fn key(file: &str, case: &str) -> String {
    format!("{}\u{0}{case}", file.trim_start_matches("./"))
}

fn hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Whether `text` is in the test file's path as the suite names it (`./x.test.yaml` when found
/// under a directory given as `.`, `x.test.yaml` when given by name): a leading `./` on either
/// side is not part of the comparison, so that `--filter ./x` picks the file however it was
/// given.
fn in_path(file: &str, text: &str) -> bool {
    fn bare(p: &str) -> &str {
        p.strip_prefix("./").unwrap_or(p)
    }
    // `./` alone stays a text of its own: stripped, it would be in every path.
    file.contains(text) || (!bare(text).is_empty() && bare(file).contains(bare(text)))
}

/// The cases to run, in file order then case order: those whose name or file any of `filters`
/// is in (all of them without filters), then one shard of those.
pub fn select(
    files: &[TestFile],
    filters: &[String],
    partition: Option<Partition>,
) -> Vec<CaseRef> {
    let mut chosen: Vec<CaseRef> = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for (ci, c) in f.cases.iter().enumerate() {
            let picked = |t: &String| c.name.contains(t.as_str()) || in_path(&f.file, t);
            if filters.is_empty() || filters.iter().any(picked) {
                chosen.push(CaseRef { file: fi, case: ci });
            }
        }
    }
    match partition {
        None => chosen,
        Some(Partition::Hash { k, n }) => chosen
            .into_iter()
            .filter(|r| {
                let (f, c) = (&files[r.file], &files[r.file].cases[r.case]);
                hash(&key(&f.file, &c.name)) % n as u64 == (k - 1) as u64
            })
            .collect(),
        Some(Partition::Count { k, n }) => {
            let (len, k) = (chosen.len(), k - 1);
            // Shard k holds [k*len/n, (k+1)*len/n): sizes differ by at most one.
            let (start, end) = (k * len / n, (k + 1) * len / n);
            chosen[start..end].to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_parse() {
        assert_eq!("hash:2/3".parse(), Ok(Partition::Hash { k: 2, n: 3 }));
        assert_eq!("count:1/1".parse(), Ok(Partition::Count { k: 1, n: 1 }));
        for bad in [
            "hash:0/3",
            "hash:4/3",
            "count:1/0",
            "mod:1/2",
            "hash:1",
            "1/2",
            "hash:a/b",
        ] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_path_filter_reads_the_same_with_or_without_a_leading_dot_slash() {
        for (file, text, want) in [
            ("./alpha.test.yaml", "alpha", true),
            ("./alpha.test.yaml", "./alpha", true),
            ("alpha.test.yaml", "./alpha", true),
            ("sub/alpha.test.yaml", "sub/", true),
            ("./sub/alpha.test.yaml", "./sub/alpha", true),
            ("alpha.test.yaml", "./beta", false),
            ("alpha.test.yaml", "Alpha", false),
            ("alpha.test.yaml", "./", false),
            ("./alpha.test.yaml", "./", true),
        ] {
            assert_eq!(in_path(file, text), want, "{text} in {file}");
        }
    }

    #[test]
    fn count_shards_are_contiguous_and_even() {
        let len = 10usize;
        let mut seen = Vec::new();
        for k in 0..3 {
            let (s, e) = (k * len / 3, (k + 1) * len / 3);
            assert!((3..=4).contains(&(e - s)));
            seen.extend(s..e);
        }
        assert_eq!(seen, (0..len).collect::<Vec<_>>());
    }
}
