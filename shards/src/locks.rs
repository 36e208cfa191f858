//! Per-key serialisation on one shard: at most one control-plane operation per basin or
//! stream runs at a time, across its await points. Shard-local, so no thread ever waits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

use glommio::sync::Semaphore;

pub struct KeyedLocks<K> {
    held: RefCell<HashMap<K, Rc<Semaphore>>>,
}

pub struct KeyGuard<'a, K: Hash + Eq + Clone> {
    locks: &'a KeyedLocks<K>,
    key: K,
    sem: Rc<Semaphore>,
}

impl<K: Hash + Eq + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            held: RefCell::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: K) -> KeyGuard<'_, K> {
        let sem = self
            .held
            .borrow_mut()
            .entry(key.clone())
            .or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone();
        // The semaphore is never closed, so acquiring cannot fail.
        sem.acquire(1).await.expect("keyed lock semaphore closed");
        KeyGuard {
            locks: self,
            key,
            sem,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.borrow().len()
    }
}

impl<K: Hash + Eq + Clone> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        self.sem.signal(1);
        // Only the map and this guard hold it: nobody is waiting, so forget the key.
        if Rc::strong_count(&self.sem) == 2 {
            self.locks.held.borrow_mut().remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn serialises_per_key_and_forgets_idle_keys() {
        glommio::LocalExecutor::default().run(async {
            let locks = Rc::new(KeyedLocks::<u32>::default());
            let inside = Rc::new(Cell::new(0));
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (locks, inside) = (locks.clone(), inside.clone());
                tasks.push(glommio::spawn_local(async move {
                    let _g = locks.lock(7).await;
                    inside.set(inside.get() + 1);
                    assert_eq!(inside.get(), 1, "two holders of one key");
                    glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                    inside.set(inside.get() - 1);
                }));
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(locks.len(), 0);
        });
    }
}
