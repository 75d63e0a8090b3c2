//! A whole job's placement: one worker through [`place_single`], several as a gang (all or
//! nothing, under the DT-FM cost model). Successful placements are recorded in the index, so the
//! decisions of one scheduling cycle see each other.

use crate::{
    index::{Index, NodeKey},
    inputs::{BasePrices, Network},
    model::{Request, Unschedulable},
    single::{Weights, place_single},
};

/// Seed of the gang solver's search: fixed, so the same fleet and job give the same placement.
const GANG_SEED: u64 = 0x000A_602A;

/// Where one worker goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub rank: u32,
    pub node: NodeKey,
    pub gpus: Vec<String>,
    /// Effective price per GPU-hour on that node.
    pub price_micros: u64,
}

/// Places every worker of `request` and marks their GPUs allocated in `index`; on failure nothing
/// is allocated. A federated job goes to its data sites
/// ([`place_federated`](crate::federated::place_federated)); one worker through [`place_single`]; a
/// gang through
/// [`place_gang`](crate::place_gang::place_gang) and the DT-FM cost model. A caller that cannot
/// commit the placement must release it with [`release`].
pub fn place(
    index: &mut Index,
    network: &impl Network,
    prices: &impl BasePrices,
    request: &Request,
    weights: &Weights,
) -> Result<Vec<Slot>, Unschedulable> {
    if !request.data_nodes.is_empty() {
        return crate::federated::place_federated(index, prices, request);
    }
    if request.workers > 1 {
        return crate::place_gang::place_gang(
            index,
            network,
            prices,
            request,
            GANG_SEED,
            crate::gang::DEFAULT_BUDGET,
        );
    }
    let choice = place_single(index, network, prices, request, weights)?;
    index.set_allocated(choice.node, &choice.gpus, true);
    Ok(vec![Slot {
        rank: 0,
        node: choice.node,
        gpus: choice.gpus,
        price_micros: choice.price_micros,
    }])
}

/// Frees the GPUs of a placement that will not be used.
pub fn release(index: &mut Index, slots: &[Slot]) {
    for slot in slots {
        index.set_allocated(slot.node, &slot.gpus, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AskOnly, Unmeasured};

    /// A single-region node of `gpus` free H100s.
    fn node(name: &str, gpus: usize) -> crate::NodeView {
        crate::fixtures::node(name, "eu", 1_000_000, &vec!["H100"; gpus], "builtin:sleep")
    }

    fn request(workers: u32, gpus: u32) -> Request {
        Request {
            workers,
            gpus_per_worker: gpus,
            max_price_micros: 5_000_000,
            capability: "builtin:sleep".into(),
            ..Request::default()
        }
    }

    #[test]
    fn a_gang_that_does_not_fit_leaves_nothing_allocated() {
        let mut index = Index::new();
        index.apply(node("a", 2));
        index.apply(node("b", 2));
        let err = place(
            &mut index,
            &Unmeasured,
            &AskOnly,
            &request(3, 2),
            &Weights::default(),
        )
        .unwrap_err();
        assert_eq!(err.workers_that_fit, 2);
        assert_eq!(
            index.iter().map(|(_, e)| e.free_total()).sum::<usize>(),
            4,
            "all GPUs free again"
        );
    }

    #[test]
    fn a_gang_that_fits_holds_distinct_gpus() {
        let mut index = Index::new();
        index.apply(node("a", 4));
        let slots = place(
            &mut index,
            &Unmeasured,
            &AskOnly,
            &request(2, 2),
            &Weights::default(),
        )
        .unwrap();
        let mut gpus: Vec<&String> = slots.iter().flat_map(|s| &s.gpus).collect();
        gpus.sort();
        gpus.dedup();
        assert_eq!(gpus.len(), 4);
        assert_eq!(index.iter().map(|(_, e)| e.free_total()).sum::<usize>(), 0);
        release(&mut index, &slots);
        assert_eq!(index.iter().map(|(_, e)| e.free_total()).sum::<usize>(), 4);
    }
}
