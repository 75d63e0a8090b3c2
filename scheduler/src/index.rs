//! The fleet held in memory, updated incrementally, so a placement decision looks things up rather
//! than scanning the fleet.
//!
//! Nodes get a dense [`NodeKey`] (reused after removal) that the network model shares. For every
//! (region, GPU model) pair the index keeps the nodes that have at least one free, healthy GPU of that
//! model, ordered by asking price. A single-worker decision walks those lists cheapest first and stops
//! as soon as no cheaper node can beat the best found (see `single`), so its cost depends on how many
//! nodes are *competitive*, not on the fleet's size.

use std::collections::{BTreeSet, HashMap};

use crate::model::{GpuView, NodeView};

/// Dense identifier of a node inside the index (and the network model).
pub type NodeKey = u32;

/// An interned region or GPU model name.
pub type Name = u16;

/// One node, as indexed.
#[derive(Clone, Debug)]
pub struct Entry {
    pub node: NodeView,
    pub region: Name,
    /// Interned model of each GPU, parallel to `node.gpus`.
    pub models: Vec<Name>,
}

impl Entry {
    /// Free, healthy GPUs of `model` on this node.
    pub fn free_of(&self, model: Name) -> usize {
        self.free_indices(model).count()
    }

    /// Indices into `node.gpus` of the free, healthy GPUs of `model`.
    pub fn free_indices(&self, model: Name) -> impl Iterator<Item = usize> + '_ {
        self.models
            .iter()
            .zip(&self.node.gpus)
            .enumerate()
            .filter(move |(_, (m, g))| **m == model && usable(g))
            .map(|(i, _)| i)
    }

    /// Free, healthy GPUs of any model.
    pub fn free_total(&self) -> usize {
        self.node.gpus.iter().filter(|g| usable(g)).count()
    }
}

fn usable(gpu: &GpuView) -> bool {
    gpu.healthy && !gpu.allocated
}

/// Interns names to small integers, so lists are keyed by integers.
#[derive(Clone, Debug, Default)]
struct Interner {
    ids: HashMap<String, Name>,
    names: Vec<String>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> Name {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = Name::try_from(self.names.len()).unwrap_or(Name::MAX);
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }

    fn get(&self, name: &str) -> Option<Name> {
        self.ids.get(name).copied()
    }
}

/// The fleet.
#[derive(Clone, Debug, Default)]
pub struct Index {
    entries: Vec<Option<Entry>>,
    by_name: HashMap<String, NodeKey>,
    vacant: Vec<NodeKey>,
    regions: Interner,
    models: Interner,
    /// (region, model) → nodes with a free healthy GPU of that model, by (ask, key).
    lists: HashMap<(Name, Name), BTreeSet<(u64, NodeKey)>>,
    /// Nodes per region, for explanations and gang candidate pools.
    members: HashMap<Name, BTreeSet<NodeKey>>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole fleet (a resync from the store).
    pub fn reset(&mut self, nodes: impl IntoIterator<Item = NodeView>) {
        *self = Self::default();
        for node in nodes {
            self.apply(node);
        }
    }

    /// Adds a node or replaces what is known of it (same name), and returns its key.
    pub fn apply(&mut self, node: NodeView) -> NodeKey {
        let key = match self.by_name.get(&node.name) {
            Some(key) => {
                let key = *key;
                self.unlist(key);
                key
            }
            None => {
                let key = self.vacant.pop().unwrap_or_else(|| {
                    self.entries.push(None);
                    NodeKey::try_from(self.entries.len() - 1).unwrap_or(NodeKey::MAX)
                });
                self.by_name.insert(node.name.clone(), key);
                key
            }
        };
        let region = self.regions.intern(&node.region);
        let models = node
            .gpus
            .iter()
            .map(|g| self.models.intern(&g.model))
            .collect();
        self.entries[key as usize] = Some(Entry {
            node,
            region,
            models,
        });
        self.list(key);
        key
    }

    /// Forgets a node.
    pub fn remove(&mut self, name: &str) -> Option<NodeView> {
        let key = self.by_name.remove(name)?;
        self.unlist(key);
        self.vacant.push(key);
        self.entries[key as usize].take().map(|e| e.node)
    }

    /// Marks GPUs (by UUID) of a node allocated or free, keeping the lists in step.
    pub fn set_allocated(&mut self, key: NodeKey, uuids: &[String], allocated: bool) {
        if self.entry(key).is_none() {
            return;
        }
        self.unlist(key);
        if let Some(Some(entry)) = self.entries.get_mut(key as usize) {
            for gpu in entry
                .node
                .gpus
                .iter_mut()
                .filter(|g| uuids.contains(&g.uuid))
            {
                gpu.allocated = allocated;
            }
        }
        self.list(key);
    }

    /// The node with this key.
    pub fn entry(&self, key: NodeKey) -> Option<&Entry> {
        self.entries.get(key as usize).and_then(Option::as_ref)
    }

    /// The key of a node by name.
    pub fn key(&self, name: &str) -> Option<NodeKey> {
        self.by_name.get(name).copied()
    }

    /// Every node, by key.
    pub fn iter(&self) -> impl Iterator<Item = (NodeKey, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(k, e)| e.as_ref().map(|e| (k as NodeKey, e)))
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the index holds no node.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn region_id(&self, name: &str) -> Option<Name> {
        self.regions.get(name)
    }

    pub fn region_name(&self, id: Name) -> &str {
        self.regions
            .names
            .get(id as usize)
            .map_or("", String::as_str)
    }

    pub fn model_id(&self, name: &str) -> Option<Name> {
        self.models.get(name)
    }

    pub fn model_name(&self, id: Name) -> &str {
        self.models
            .names
            .get(id as usize)
            .map_or("", String::as_str)
    }

    /// Every known region id.
    pub fn region_ids(&self) -> impl Iterator<Item = Name> {
        0..self.regions.names.len() as Name
    }

    /// Every known model id.
    pub fn model_ids(&self) -> impl Iterator<Item = Name> {
        0..self.models.names.len() as Name
    }

    /// Nodes of `region` with a free healthy GPU of `model`, cheapest ask first.
    pub fn candidates(
        &self,
        region: Name,
        model: Name,
    ) -> impl Iterator<Item = (u64, NodeKey)> + '_ {
        self.lists
            .get(&(region, model))
            .into_iter()
            .flat_map(|set| set.iter().copied())
    }

    /// Nodes of a region.
    pub fn members(&self, region: Name) -> impl Iterator<Item = NodeKey> + '_ {
        self.members
            .get(&region)
            .into_iter()
            .flat_map(|set| set.iter().copied())
    }

    fn list(&mut self, key: NodeKey) {
        let Some(entry) = self.entry(key) else { return };
        let (region, ask) = (entry.region, entry.node.price_micros);
        let mut models: Vec<Name> = entry.free_models().collect();
        models.dedup();
        for model in models {
            self.lists
                .entry((region, model))
                .or_default()
                .insert((ask, key));
        }
        self.members.entry(region).or_default().insert(key);
    }

    fn unlist(&mut self, key: NodeKey) {
        let Some(entry) = self.entry(key) else { return };
        let (region, ask) = (entry.region, entry.node.price_micros);
        let models: Vec<Name> = entry.models.clone();
        for model in models {
            if let Some(set) = self.lists.get_mut(&(region, model)) {
                set.remove(&(ask, key));
            }
        }
        if let Some(set) = self.members.get_mut(&region) {
            set.remove(&key);
        }
    }
}

impl Entry {
    /// Models with a free healthy GPU on this node, sorted.
    fn free_models(&self) -> impl Iterator<Item = Name> + '_ {
        let mut models: Vec<Name> = self
            .models
            .iter()
            .zip(&self.node.gpus)
            .filter(|(_, g)| usable(g))
            .map(|(m, _)| *m)
            .collect();
        models.sort_unstable();
        models.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, region: &str, ask: u64, models: &[&str]) -> NodeView {
        crate::fixtures::node(name, region, ask, models, "builtin:sleep")
    }

    fn listed(index: &Index, region: &str, model: &str) -> Vec<String> {
        let (Some(r), Some(m)) = (index.region_id(region), index.model_id(model)) else {
            return vec![];
        };
        index
            .candidates(r, m)
            .map(|(_, k)| index.entry(k).unwrap().node.name.clone())
            .collect()
    }

    #[test]
    fn lists_nodes_with_free_gpus_cheapest_first() {
        let mut index = Index::new();
        index.apply(node("b", "eu", 3, &["H100", "H100"]));
        index.apply(node("a", "eu", 2, &["H100", "L4"]));
        index.apply(node("c", "us", 1, &["H100"]));
        assert_eq!(listed(&index, "eu", "H100"), ["a", "b"]);
        assert_eq!(listed(&index, "eu", "L4"), ["a"]);
        assert_eq!(listed(&index, "us", "H100"), ["c"]);
    }

    #[test]
    fn allocation_and_release_move_nodes_in_and_out_of_the_lists() {
        let mut index = Index::new();
        let a = index.apply(node("a", "eu", 2, &["H100", "L4"]));
        index.set_allocated(a, &["a-1".to_string()], true);
        assert_eq!(listed(&index, "eu", "L4"), Vec::<String>::new());
        assert_eq!(listed(&index, "eu", "H100"), ["a"]);
        index.set_allocated(a, &["a-1".to_string()], false);
        assert_eq!(listed(&index, "eu", "L4"), ["a"]);
    }

    #[test]
    fn updates_replace_and_removal_forgets_with_key_reuse() {
        let mut index = Index::new();
        let a = index.apply(node("a", "eu", 2, &["H100"]));
        assert_eq!(
            index.apply(node("a", "us", 5, &["H100"])),
            a,
            "the same name keeps its key"
        );
        assert!(listed(&index, "eu", "H100").is_empty());
        assert_eq!(listed(&index, "us", "H100"), ["a"]);
        index.remove("a");
        assert!(listed(&index, "us", "H100").is_empty());
        assert_eq!(index.len(), 0);
        assert_eq!(
            index.apply(node("b", "eu", 1, &["L4"])),
            a,
            "keys are reused"
        );
    }

    #[test]
    fn unhealthy_gpus_are_never_listed() {
        let mut index = Index::new();
        let mut n = node("a", "eu", 2, &["H100"]);
        n.gpus[0].healthy = false;
        index.apply(n);
        assert!(listed(&index, "eu", "H100").is_empty());
    }

    #[test]
    fn reset_rebuilds_from_scratch() {
        let mut index = Index::new();
        index.apply(node("a", "eu", 2, &["H100"]));
        index.reset([node("b", "us", 1, &["L4"])]);
        assert_eq!(index.len(), 1);
        assert!(index.key("a").is_none());
        assert_eq!(listed(&index, "us", "L4"), ["b"]);
    }
}
