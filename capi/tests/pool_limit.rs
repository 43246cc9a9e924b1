//! The pool table's limit of live pools is a status code, and freeing one makes room again.
//! (Its own test binary: it fills the process-wide pool table.)

use segpool_capi::*;

fn create() -> (SegpoolStatus, SegpoolPool) {
    let config = SegpoolConfig {
        size_classes: std::ptr::null(),
        size_class_count: 0,
        region_size: 0,
        budget: 0,
        flags: 0,
    };
    let mut pool = 0;
    // SAFETY: both pointers are to live locals of the right types.
    let st = unsafe { segpool_pool_create(&config, &mut pool) };
    (st, pool)
}

#[test]
fn the_32768th_live_pool_is_refused_with_limit_reached() {
    let mut pools = Vec::new();
    loop {
        match create() {
            (SegpoolStatus::Ok, p) => pools.push(p),
            (SegpoolStatus::LimitReached, p) => {
                assert_eq!(p, 0);
                break;
            }
            (other, _) => panic!("unexpected {other:?}"),
        }
        assert!(pools.len() <= 40_000, "no limit reached");
    }
    assert_eq!(pools.len(), 32767);
    let freed = pools.swap_remove(1234);
    assert_eq!(segpool_pool_free(freed), SegpoolStatus::Ok);
    let (st, again) = create();
    assert_eq!(st, SegpoolStatus::Ok);
    assert_ne!(again, freed, "a reused index gets a new serial");
    assert_eq!(segpool_pool_free(freed), SegpoolStatus::StaleHandle);
    pools.push(again);
    for p in pools {
        assert_eq!(segpool_pool_free(p), SegpoolStatus::Ok);
    }
}
