//! Member names to slots, for the object decoders' hot loop.
//!
//! An open-addressing table whose entries carry a signature of the name: its length and its
//! first and last eight bytes. For a name of up to 16 bytes, which is nearly every FHIR element
//! name, the signature *is* the name, so a lookup compares three integers and never calls
//! `memcmp`; longer names are compared in full.

pub(super) struct KeyTable<V> {
    slots: Vec<Option<Entry<V>>>,
    mask: usize,
    len: usize,
}

struct Entry<V> {
    len: usize,
    a: u64,
    b: u64,
    key: Box<[u8]>,
    value: V,
}

#[inline]
fn signature(k: &[u8]) -> (u64, u64) {
    let n = k.len();
    if n >= 8 {
        let a = u64::from_le_bytes(k[..8].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(k[n - 8..].try_into().expect("8 bytes"));
        (a, b)
    } else if n >= 4 {
        // Two overlapping loads cover the name (no variable-length copy, which is a call).
        let a = u32::from_le_bytes(k[..4].try_into().expect("4 bytes"));
        let b = u32::from_le_bytes(k[n - 4..].try_into().expect("4 bytes"));
        (u64::from(a) | u64::from(b) << 32, 0)
    } else {
        let a = k.iter().rev().fold(0u64, |a, &c| a << 8 | u64::from(c));
        (a, 0)
    }
}

#[inline]
fn hash(len: usize, a: u64, b: u64) -> usize {
    let h =
        (a ^ b.rotate_left(29) ^ (len as u64).rotate_left(53)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as usize
}

impl<V: Copy> KeyTable<V> {
    /// A table that takes `n` keys without growing.
    pub fn with_capacity(n: usize) -> Self {
        let size = (n * 2 + 2).next_power_of_two().max(8);
        KeyTable {
            slots: (0..size).map(|_| None).collect(),
            mask: size - 1,
            len: 0,
        }
    }

    /// Adds `key`, or replaces its value.
    pub fn insert(&mut self, key: &str, value: V) {
        if (self.len + 1) * 2 > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            let size = old.len() * 2;
            self.slots = (0..size).map(|_| None).collect();
            self.mask = size - 1;
            self.len = 0;
            for e in old.into_iter().flatten() {
                self.place(e);
            }
        }
        let k = key.as_bytes();
        let (a, b) = signature(k);
        let e = Entry {
            len: k.len(),
            a,
            b,
            key: k.into(),
            value,
        };
        self.place(e);
    }

    fn place(&mut self, e: Entry<V>) {
        let mut i = hash(e.len, e.a, e.b) & self.mask;
        loop {
            match &mut self.slots[i] {
                Some(x) if *x.key == *e.key => {
                    x.value = e.value;
                    return;
                }
                Some(_) => i = (i + 1) & self.mask,
                slot @ None => {
                    *slot = Some(e);
                    self.len += 1;
                    return;
                }
            }
        }
    }

    #[inline]
    pub fn get(&self, key: &str) -> Option<V> {
        let k = key.as_bytes();
        let n = k.len();
        let (a, b) = signature(k);
        let mut i = hash(n, a, b) & self.mask;
        loop {
            match &self.slots[i] {
                None => return None,
                Some(e) if e.len == n && e.a == a && e.b == b && (n <= 16 || *e.key == *k) => {
                    return Some(e.value)
                }
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyTable;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut t = KeyTable::with_capacity(0);
        let names: Vec<String> = (0..300)
            .map(|i| match i % 4 {
                0 => format!("n{i}"),
                1 => format!("valueCodeableConcept{i}"),
                2 => format!("_{i}"),
                _ => "x".repeat(i % 40 + 1),
            })
            .collect();
        for (i, n) in names.iter().enumerate() {
            t.insert(n, i);
        }
        for n in &names {
            // The last insert of a repeated name wins.
            let want = names.iter().rposition(|x| x == n).unwrap();
            assert_eq!(t.get(n), Some(want), "{n}");
        }
        for miss in [
            "",
            "n",
            "valueCodeableConcept",
            "valueCodeableConcept3x",
            "y",
            "_",
        ] {
            assert_eq!(t.get(miss), None, "{miss}");
        }
        // Same length, same first and last 8 bytes, different middle: compared in full.
        let mut t = KeyTable::with_capacity(0);
        t.insert("abcdefgh-1-ijklmnop", 1);
        assert_eq!(t.get("abcdefgh-2-ijklmnop"), None);
        assert_eq!(t.get("abcdefgh-1-ijklmnop"), Some(1));
        // Short names differ from their zero-padded forms by length.
        t.insert("ab", 2);
        assert_eq!(t.get("ab\0"), None);
        // Every name of 0 to 17 bytes differing in any one byte.
        let mut t = KeyTable::with_capacity(0);
        let base: Vec<String> = (0..18)
            .map(|n| "abcdefghijklmnopq"[..n].to_string())
            .collect();
        for (i, n) in base.iter().enumerate() {
            t.insert(n, i);
        }
        for (i, n) in base.iter().enumerate() {
            assert_eq!(t.get(n), Some(i));
            for at in 0..n.len() {
                let mut other = n.clone().into_bytes();
                other[at] = b'Z';
                assert_eq!(
                    t.get(std::str::from_utf8(&other).unwrap()),
                    None,
                    "{n} at {at}"
                );
            }
        }
    }
}
