//! Generational slots for a worker's connections: a [`Key`] names one tenant of one slot, and
//! the slot's generation is bumped when the tenant leaves, so a late completion (or a timer
//! entry) carrying an old key can never reach the slot's next tenant.
//!
//! Invariant: `get`/`get_mut`/`remove` return a value only for the key `insert` gave it.
//! Generations are 24 bits wide (they travel in a ring tag); a key would have to sit unreaped
//! through 16 million reuses of its slot to alias, and completions are reaped every loop turn.

/// Names one tenant of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub idx: u32,
    pub gen: u32,
}

/// Bits of a generation.
pub const GEN_MASK: u32 = 0xFF_FFFF;

/// For the worker's small side tables (health checks, warm connects) whose operations are
/// tagged with a slot and a generation: the index of a free slot of `slots` (a new one at the
/// end if none is), and the next generation after `gen`.
pub fn vacant<T>(slots: &mut Vec<Option<T>>, gen: &mut u32) -> Key {
    let idx = match slots.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            slots.push(None);
            slots.len() - 1
        }
    };
    *gen = (*gen + 1) & GEN_MASK;
    Key {
        idx: idx as u32,
        gen: *gen,
    }
}

struct Slot<T> {
    gen: u32,
    val: Option<T>,
}

/// Slots reused last-freed-first (warm in cache), each with its generation.
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores the value `make` builds for its own key.
    pub fn insert_with(&mut self, make: impl FnOnce(Key) -> T) -> Key {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { gen: 0, val: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        let key = Key { idx, gen: slot.gen };
        slot.val = Some(make(key));
        self.len += 1;
        key
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.gen != key.gen {
            return None;
        }
        slot.val.as_mut()
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        let slot = self.slots.get(key.idx as usize)?;
        if slot.gen != key.gen {
            return None;
        }
        slot.val.as_ref()
    }

    /// Removes the tenant and retires its key.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.gen != key.gen {
            return None;
        }
        let val = slot.val.take()?;
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push(key.idx);
        self.len -= 1;
        Some(val)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys of every tenant (O(slots): for shutdown, not for the hot path).
    pub fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.val.is_some())
            .map(|(i, s)| Key {
                idx: i as u32,
                gen: s.gen,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_never_names_the_next_tenant() {
        let mut slab = Slab::default();
        let a = slab.insert_with(|k| (k, "a"));
        assert_eq!(slab.get(a).map(|v| v.1), Some("a"));
        assert_eq!(slab.remove(a).map(|v| v.1), Some("a"));
        let b = slab.insert_with(|k| (k, "b"));
        assert_eq!(a.idx, b.idx, "the slot is reused");
        assert_ne!(a, b);
        assert!(slab.get(a).is_none());
        assert!(slab.get_mut(a).is_none());
        assert!(
            slab.remove(a).is_none(),
            "a stale remove leaves the tenant alone"
        );
        assert_eq!(slab.get(b).map(|v| v.0), Some(b), "the value knows its key");
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.keys(), vec![b]);
    }

    #[test]
    fn generations_wrap_within_the_mask() {
        let mut slab = Slab::default();
        let mut k = slab.insert_with(|_| ());
        for _ in 0..(GEN_MASK as usize + 2) / 4096 {
            slab.remove(k);
            k = slab.insert_with(|_| ());
        }
        slab.slots[0].gen = GEN_MASK;
        let k = Key {
            idx: 0,
            gen: GEN_MASK,
        };
        slab.remove(k).unwrap();
        let next = slab.insert_with(|_| ());
        assert_eq!(next.gen, 0);
    }
}
