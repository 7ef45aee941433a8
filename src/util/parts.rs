//! Work on many items shared between threads, one contiguous part each, as git splits a
//! checkout (`checkout.workers`) and its index refresh (preload-index).

/// One part of [`in_parts`]: where it starts among the items, its items, and what `work`
/// returned for it (`Err` with the panic when its thread panicked).
pub type Part<'a, T, R> = (usize, &'a [T], std::thread::Result<R>);

/// Splits `items` into at most `workers` contiguous parts of nearly equal size and runs
/// `work(start, part)` for each, `start` being the position of the part's first item in
/// `items`: the first part on this thread, every other on a thread of its own. With one
/// worker (or none), or one item, nothing is started.
///
/// Returns the parts in order, each with its result; a part whose thread panicked carries
/// the panic, for the caller to decide what it means (do it again, or fail).
pub fn in_parts<'a, T, R, W>(items: &'a [T], workers: usize, work: W) -> Vec<Part<'a, T, R>>
where
    T: Sync,
    R: Send,
    W: Fn(usize, &'a [T]) -> R + Sync,
{
    let size = items.len().div_ceil(workers.max(1)).max(1);
    let mut parts = items
        .chunks(size)
        .enumerate()
        .map(|(i, part)| (i * size, part));
    let Some((first_start, first)) = parts.next() else {
        return Vec::new();
    };
    let work = &work;
    std::thread::scope(|scope| {
        let others: Vec<_> = parts
            .map(|(start, part)| (start, part, scope.spawn(move || work(start, part))))
            .collect();
        let mut done = vec![(first_start, first, Ok(work(first_start, first)))];
        for (start, part, thread) in others {
            done.push((start, part, thread.join()));
        }
        done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_in_one_part_in_order_with_its_position() {
        let items: Vec<usize> = (0..1_003).collect();
        for workers in [0, 1, 2, 3, 4, 7, 2_000] {
            let parts = in_parts(&items, workers, |start, part| {
                assert!(part.iter().enumerate().all(|(i, &item)| item == start + i));
                part.iter().sum::<usize>()
            });
            assert!(parts.len() <= workers.max(1), "{workers} workers");
            let seen: Vec<usize> = parts
                .iter()
                .flat_map(|(_, part, _)| part.iter().copied())
                .collect();
            assert_eq!(seen, items, "{workers} workers");
            let total: usize = parts
                .into_iter()
                .map(|(_, _, sum)| sum.expect("no panic"))
                .sum();
            assert_eq!(total, items.iter().sum::<usize>());
        }
        assert!(in_parts(&[] as &[u8], 4, |_, _| ()).is_empty());
    }

    #[test]
    fn a_part_that_panics_is_reported_and_the_others_finish() {
        let items: Vec<u32> = (0..100).collect();
        let parts = in_parts(&items, 4, |start, part| {
            assert!(start != 50, "the third part fails");
            part.len()
        });
        let failed: Vec<usize> = parts
            .iter()
            .filter(|(_, _, r)| r.is_err())
            .map(|(start, _, _)| *start)
            .collect();
        assert_eq!(failed, [50]);
        assert_eq!(parts.iter().filter(|(_, _, r)| r.is_ok()).count(), 3);
    }
}
