//! The devnet's key-value store: every module's state (bank balances, the contract's instance and
//! its data) in one ordered map, metered at the Cosmos SDK's store prices ([`super::gas`]), and
//! saved to a file after each transaction so a restarted `agora dev` finds its chain as it left it.

use std::{
    cell::Cell,
    collections::BTreeMap,
    io::Write,
    ops::Bound,
    path::{Path, PathBuf},
    rc::Rc,
};

use cosmwasm_std::{Order, Record, Storage};

use super::gas;

/// The chain's state, metered. The meter is shared with the devnet's thread, which zeroes it
/// before a transaction and reads it after.
pub struct MeteredStorage {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    gas: Rc<Cell<u64>>,
}

impl MeteredStorage {
    pub fn new(data: BTreeMap<Vec<u8>, Vec<u8>>, gas: Rc<Cell<u64>>) -> Self {
        Self { data, gas }
    }

    pub fn data(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.data
    }

    fn charge(&self, amount: u64) {
        self.gas.set(self.gas.get().saturating_add(amount));
    }
}

impl Storage for MeteredStorage {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let value = self.data.get(key).cloned();
        let bytes = value.as_ref().map_or(0, Vec::len) as u64;
        self.charge(gas::READ_FLAT + gas::READ_PER_BYTE * bytes);
        value
    }

    fn range<'a>(
        &'a self,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        order: Order,
    ) -> Box<dyn Iterator<Item = Record> + 'a> {
        let lower = start.map_or(Bound::Unbounded, |s| Bound::Included(s.to_vec()));
        let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        // An empty or inverted range is empty, whatever the order (BTreeMap would panic).
        if let (Some(s), Some(e)) = (start, end)
            && s >= e
        {
            return Box::new(std::iter::empty());
        }
        let items = self.data.range((lower, upper));
        let charged = move |(k, v): (&Vec<u8>, &Vec<u8>)| {
            self.charge(gas::ITER_NEXT_FLAT + gas::READ_PER_BYTE * (k.len() + v.len()) as u64);
            (k.clone(), v.clone())
        };
        match order {
            Order::Ascending => Box::new(items.map(charged)),
            Order::Descending => Box::new(items.rev().map(charged)),
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.charge(gas::WRITE_FLAT + gas::WRITE_PER_BYTE * (key.len() + value.len()) as u64);
        self.data.insert(key.to_vec(), value.to_vec());
    }

    fn remove(&mut self, key: &[u8]) {
        self.charge(gas::DELETE);
        self.data.remove(key);
    }
}

/// What a saved devnet holds besides its store: enough to pick the chain up where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// [`FORMAT`]; a file in another format is refused, not misread.
    pub format: String,
    pub chain_id: String,
    /// The settlement contract's address.
    pub contract: String,
    pub height: u64,
    /// Block time, Unix nanoseconds.
    pub time_ns: u64,
    /// Transactions executed so far (numbers the transaction hashes).
    pub transactions: u64,
}

/// The file format this build writes and reads.
pub const FORMAT: &str = "agora-devnet-state/1";

/// A saved devnet: the header, then the store as hex pairs, in JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    header: Header,
    entries: Vec<(String, String)>,
}

/// The store's entries, ordered by key.
pub type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Where the devnet keeps its state between runs.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved chain, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<(Header, Entries)>, String> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let saved: Saved = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not a devnet state file: {e}", self.path.display()))?;
        if saved.header.format != FORMAT {
            return Err(format!(
                "{} is in format {:?}; this build reads {FORMAT:?} (delete it to start a new devnet)",
                self.path.display(),
                saved.header.format
            ));
        }
        let mut data = BTreeMap::new();
        for (key, value) in saved.entries {
            let decode = |hex_text: &str| {
                hex::decode(hex_text)
                    .map_err(|e| format!("{}: a store entry is not hex: {e}", self.path.display()))
            };
            data.insert(decode(&key)?, decode(&value)?);
        }
        Ok(Some((saved.header, data)))
    }

    /// Replaces the saved chain: written beside it, synced, then renamed over it, so a crash
    /// leaves either the old state or the new one.
    pub fn save(&self, header: &Header, data: &Entries) -> Result<(), String> {
        let saved = Saved {
            header: header.clone(),
            entries: data
                .iter()
                .map(|(k, v)| (hex::encode(k), hex::encode(v)))
                .collect(),
        };
        let text = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
        let temporary = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            if let Some(dir) = self.path.parent()
                && let Ok(dir) = std::fs::File::open(dir)
            {
                let _ = dir.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| format!("saving the devnet to {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (MeteredStorage, Rc<Cell<u64>>) {
        let gas = Rc::new(Cell::new(0));
        (MeteredStorage::new(BTreeMap::new(), gas.clone()), gas)
    }

    #[test]
    fn every_access_is_charged_at_the_sdk_prices() {
        let (mut store, gas) = store();
        store.set(b"key", b"value");
        assert_eq!(gas.get(), gas::WRITE_FLAT + 8 * gas::WRITE_PER_BYTE);
        gas.set(0);
        assert_eq!(store.get(b"key").as_deref(), Some(&b"value"[..]));
        assert_eq!(gas.get(), gas::READ_FLAT + 5 * gas::READ_PER_BYTE);
        gas.set(0);
        assert_eq!(store.get(b"missing"), None);
        assert_eq!(gas.get(), gas::READ_FLAT);
        gas.set(0);
        store.remove(b"key");
        assert_eq!(gas.get(), gas::DELETE);
    }

    #[test]
    fn ranges_follow_the_storage_contract() {
        let (mut store, _) = store();
        for key in [b"a", b"b", b"c", b"d"] {
            store.set(key, b"v");
        }
        let keys = |items: Box<dyn Iterator<Item = Record> + '_>| {
            items.map(|(k, _)| k).collect::<Vec<_>>()
        };
        assert_eq!(
            keys(store.range(Some(b"b"), Some(b"d"), Order::Ascending)),
            [b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            keys(store.range(None, Some(b"c"), Order::Descending)),
            [b"b".to_vec(), b"a".to_vec()]
        );
        assert!(keys(store.range(Some(b"d"), Some(b"b"), Order::Ascending)).is_empty());
    }

    #[test]
    fn a_saved_chain_loads_back_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("devnet.json"));
        assert!(file.load().unwrap().is_none());
        let header = Header {
            format: FORMAT.into(),
            chain_id: "agora-devnet".into(),
            contract: "agora1contract".into(),
            height: 7,
            time_ns: 1,
            transactions: 3,
        };
        let data = BTreeMap::from([(vec![0, 1], vec![2, 3]), (b"k".to_vec(), Vec::new())]);
        file.save(&header, &data).unwrap();
        assert_eq!(file.load().unwrap(), Some((header, data)));
        std::fs::write(file.path(), b"{\"not\": \"a devnet\"}").unwrap();
        let error = file.load().unwrap_err();
        assert!(error.contains("not a devnet state file"), "{error}");
    }
}
