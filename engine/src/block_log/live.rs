//! The mark phase's memory: one bit per index slot, set for each block found live. A slot
//! allocated after the mark began (a block stored during the collection) counts as live
//! without a bit: only a put can create one, and what was just stored is kept.

/// Bits over index slots.
pub struct LiveSet {
    bits: Vec<u64>,
    /// Slots that existed when the mark began; any higher one is live.
    slots_at_begin: usize,
}

impl LiveSet {
    /// Nothing marked yet, over `slots` slots (`BlockIndex::slots_len`).
    pub fn new(slots: usize) -> LiveSet {
        LiveSet {
            bits: vec![0; slots.div_ceil(64)],
            slots_at_begin: slots,
        }
    }

    /// Marks `slot` live.
    pub fn mark(&mut self, slot: u32) {
        let s = slot as usize;
        if s < self.slots_at_begin {
            self.bits[s / 64] |= 1 << (s % 64);
        }
    }

    /// Whether `slot` is live.
    pub fn is_live(&self, slot: u32) -> bool {
        let s = slot as usize;
        s >= self.slots_at_begin || self.bits[s / 64] & (1 << (s % 64)) != 0
    }

    /// Heap bytes held: a bit per slot.
    pub fn allocated_bytes(&self) -> usize {
        self.bits.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_later_slots() {
        let mut live = LiveSet::new(130);
        assert_eq!(live.allocated_bytes(), 24);
        for s in [0, 63, 64, 129] {
            assert!(!live.is_live(s));
            live.mark(s);
            assert!(live.is_live(s));
        }
        assert!(!live.is_live(1) && !live.is_live(128));
        assert!(
            live.is_live(130),
            "a slot made after the mark began is live"
        );
        live.mark(5000);
    }
}
