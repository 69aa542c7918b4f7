//! `testguest.count`'s memory pattern and checksum: pure code on a slice of pages, so
//! the host's tests include this file (tests/e2e/guest_count.rs) and recompute the
//! sums the guest prints.
//!
//! The region is a run of 4 KiB pages; on tick `n` the guest writes `WORDS_PER_PAGE`
//! 64-bit words in every page (at byte offsets 0 and 2048), word `i` of the
//! region (counting those words only, page by page) getting `value(n, i)`. Every page
//! is written every tick, so a dirty log sees all of them; the rest of each page is
//! never touched. Before rewriting, each word is compared with `value(n - 1, i)`: a
//! page that is lost (zero), stale (an older tick's values) or misplaced (another
//! page's values) is a mismatch. The sum is 64-bit FNV-1a over the written words in
//! order (each word as one 64-bit step: `h = (h ^ w) * prime`).

/// Bytes per page, and 64-bit words per page.
pub const PAGE: usize = 4096;
pub const PAGE_WORDS: usize = PAGE / 8;
/// Words written per page per tick, spread across the page.
pub const WORDS_PER_PAGE: usize = 2;
/// Distance between two of them, in words (2 KiB).
pub const STRIDE: usize = PAGE_WORDS / WORDS_PER_PAGE;

const N_MUL: u64 = 0x9e37_79b9_7f4a_7c15;
const I_MUL: u64 = 0xd1b5_4a32_d192_ed03;
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub type Page = [u64; PAGE_WORDS];

/// The value of word `i` of the region after tick `n`. Distinct for every `n` at a
/// given `i` and for every `i` at a given `n` (both multipliers are odd). `tick`
/// computes the same values incrementally; this and `expected_sum` are the reference
/// the host's tests check the guest against (unused in the guest itself).
#[cfg_attr(not(test), allow(dead_code))]
pub fn value(n: u64, i: u64) -> u64 {
    n.wrapping_mul(N_MUL) ^ i.wrapping_mul(I_MUL)
}

fn fnv_step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(FNV_PRIME)
}

/// The sum the guest prints after tick `n` for a region of `pages` pages.
#[cfg_attr(not(test), allow(dead_code))]
pub fn expected_sum(pages: usize, n: u64) -> u64 {
    let mut h = FNV_BASIS;
    for i in 0..(pages * WORDS_PER_PAGE) as u64 {
        h = fnv_step(h, value(n, i));
    }
    h
}

/// What one tick found and wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The sum of the region as written for `n`.
    pub sum: u64,
    /// Words that did not hold their `n - 1` value (always 0 for `n` = 1, whose
    /// predecessor is the region as the guest found it).
    pub mismatches: u64,
}

/// Tick `n`: checks every word against `value(n - 1, i)` (unless `n` is 1), writes
/// `value(n, i)`, and sums what it wrote. One pass, so every page is read and written
/// once; `b(i)` advances by addition, so a word costs a handful of instructions.
pub fn tick(region: &mut [Page], n: u64) -> Tick {
    let (old, new) = (n.wrapping_sub(1).wrapping_mul(N_MUL), n.wrapping_mul(N_MUL));
    let check = n != 1;
    let (mut h, mut mismatches, mut b) = (FNV_BASIS, 0u64, 0u64);
    for page in region.iter_mut() {
        for k in 0..WORDS_PER_PAGE {
            let w = &mut page[k * STRIDE];
            if check && *w != old ^ b {
                mismatches += 1;
            }
            let v = new ^ b;
            *w = v;
            h = fnv_step(h, v);
            b = b.wrapping_add(I_MUL);
        }
    }
    Tick { sum: h, mismatches }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(pages: usize) -> Vec<Page> {
        vec![[0u64; PAGE_WORDS]; pages]
    }

    #[test]
    fn ticks_write_the_values_and_sum_them() {
        let mut r = region(8);
        for n in 1..=5 {
            let t = tick(&mut r, n);
            assert_eq!(
                t,
                Tick {
                    sum: expected_sum(8, n),
                    mismatches: 0
                },
                "tick {n}"
            );
            for (p, page) in r.iter().enumerate() {
                for k in 0..WORDS_PER_PAGE {
                    let i = (p * WORDS_PER_PAGE + k) as u64;
                    assert_eq!(page[k * STRIDE], value(n, i));
                }
            }
        }
        assert_ne!(expected_sum(8, 4), expected_sum(8, 5));
        assert_ne!(expected_sum(8, 5), expected_sum(9, 5));
    }

    #[test]
    fn only_the_spread_words_are_touched() {
        let mut r = region(2);
        tick(&mut r, 1);
        let touched = r.iter().flat_map(|p| p.iter()).filter(|&&w| w != 0).count();
        // value(1, i) is never 0 for the first few i (n * N_MUL ^ i * I_MUL).
        assert_eq!(touched, 2 * WORDS_PER_PAGE);
        assert!(r
            .iter()
            .all(|p| p[1] == 0 && p[STRIDE - 1] == 0 && p[PAGE_WORDS - 1] == 0));
    }

    #[test]
    fn a_lost_stale_or_swapped_page_is_found() {
        let mut good = region(6);
        for n in 1..=3 {
            tick(&mut good, n);
        }
        let before = good.clone();
        tick(&mut good, 4);

        // Lost: page 2 reads back as zeros (a page never copied).
        let mut lost = good.clone();
        lost[2] = [0; PAGE_WORDS];
        assert_eq!(tick(&mut lost, 5).mismatches, WORDS_PER_PAGE as u64);

        // Stale: page 5 still holds tick 3's values (a dirty page not re-sent).
        let mut stale = good.clone();
        stale[5] = before[5];
        assert_eq!(tick(&mut stale, 5).mismatches, WORDS_PER_PAGE as u64);

        // Swapped: pages 0 and 1 exchanged.
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert_eq!(tick(&mut swapped, 5).mismatches, 2 * WORDS_PER_PAGE as u64);

        // One word: a single flipped bit.
        let mut flipped = good.clone();
        flipped[3][STRIDE] ^= 1 << 17;
        assert_eq!(tick(&mut flipped, 5).mismatches, 1);

        // And the intact region passes; every repaired region is right again after.
        let t = tick(&mut good, 5);
        assert_eq!(
            t,
            Tick {
                sum: expected_sum(6, 5),
                mismatches: 0
            }
        );
        for mut r in [lost, stale, swapped, flipped] {
            assert_eq!(
                tick(&mut r, 6),
                Tick {
                    sum: expected_sum(6, 6),
                    mismatches: 0
                }
            );
        }
    }

    #[test]
    fn the_first_tick_checks_nothing() {
        let mut r = region(3);
        r[1][0] = 0x1234;
        assert_eq!(tick(&mut r, 1).mismatches, 0);
        assert_eq!(tick(&mut r, 2).mismatches, 0);
    }

    #[test]
    fn the_sum_is_fnv1a_64_over_the_words() {
        // One page, tick 1: its words, folded by hand.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for i in 0..WORDS_PER_PAGE as u64 {
            h = (h ^ value(1, i)).wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(expected_sum(1, 1), h);
        assert_eq!(value(1, 0), 0x9e37_79b9_7f4a_7c15);
        assert_eq!(value(0, 1), 0xd1b5_4a32_d192_ed03);
    }
}
