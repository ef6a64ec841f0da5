//! The order the nodes run in: a topological sort of the edges, and the error that shows a
//! cycle when there is none.

use super::*;

/// The error for a cycle (indices, first repeated at the end), at the edge that closes it.
pub(super) fn cycle_error(
    cycle: &[usize],
    deps: &[Vec<(usize, Edge)>],
    labels: &[String],
) -> Diagnostic {
    let edge = |from: usize, to: usize| {
        deps[to]
            .iter()
            .find(|(j, _)| *j == from)
            .map(|(_, e)| e.clone())
            .expect("edge exists")
    };
    let because: Vec<String> = cycle
        .windows(2)
        .map(|w| {
            format!(
                "'{}' → '{}' ({})",
                labels[w[0]],
                labels[w[1]],
                edge(w[0], w[1]).describe()
            )
        })
        .collect();
    let names: Vec<&str> = cycle.iter().map(|&i| labels[i].as_str()).collect();
    let first = cycle[1];
    let field = match edge(cycle[0], first) {
        Edge::After => "after".to_string(),
        Edge::Template(f) => f,
        Edge::Code => "code".to_string(),
        Edge::Branch { condition, .. } => format!("(branch of {condition})"),
    };
    Diagnostic::new(format!(
        "cycle: {}; because {}",
        names.join(" → "),
        because.join(", ")
    ))
    .node_at(first, labels[first].clone())
    .field(field)
}

/// Kahn's algorithm, taking the lowest file index among ready nodes. On a cycle, returns one
/// cycle as indices, first node repeated at the end.
pub(super) fn topo_order(n: usize, deps: &[Vec<(usize, Edge)>]) -> Result<Vec<usize>, Vec<usize>> {
    let mut indegree = vec![0usize; n];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        let mut ups: Vec<usize> = d.iter().map(|(j, _)| *j).collect();
        ups.sort_unstable();
        ups.dedup();
        indegree[i] = ups.len();
        for j in ups {
            downstream[j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &k in &downstream[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.push(Reverse(k));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk upstream from a node left over until a node repeats: that is a cycle.
    let left: Vec<bool> = (0..n).map(|i| indegree[i] > 0).collect();
    let start = (0..n).find(|&i| left[i]).expect("a node is left");
    let mut path = vec![start];
    let mut seen = HashMap::new();
    seen.insert(start, 0);
    let mut cur = start;
    loop {
        let next = deps[cur]
            .iter()
            .map(|(j, _)| *j)
            .filter(|&j| left[j])
            .min()
            .expect("a left node has a left upstream");
        if let Some(&pos) = seen.get(&next) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.push(next);
            // `path` follows upstream edges; a cycle reads better downstream.
            cycle.reverse();
            return Err(cycle);
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}
