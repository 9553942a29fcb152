//! A map kept as a sorted `Vec`: the indexes hold one small map per VirtualService or route
//! name, usually of one or two entries, where a `BTreeMap` node would cost a kilobyte.

#[derive(Clone, Debug)]
pub(crate) struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    pub fn insert(&mut self, key: K, value: V) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => {
                // Most of these maps hold one or two entries for good: no spare capacity.
                self.0.reserve_exact(1);
                self.0.insert(i, (key, value))
            }
        }
    }

    pub fn remove(&mut self, key: &K) {
        if let Ok(i) = self.0.binary_search_by(|(k, _)| k.cmp(key)) {
            self.0.remove(i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_sorted_and_unique() {
        let mut m = VecMap::default();
        for k in [3, 1, 2, 1] {
            m.insert(k, k * 10);
        }
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        m.remove(&2);
        m.remove(&7);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [10, 30]);
    }
}
