//! `PoolStats` and `PoolUsage` serialize to JSON with the `serde` feature
//! (`cargo test --workspace` turns the feature on through the cli; alone:
//! `cargo test --features serde --test diagnostics_serde`).
#![cfg(feature = "serde")]

use segpool::SegmentPool;

#[test]
fn stats_serialize_to_json() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 65536])
        .huge_pages(false)
        .build()
        .unwrap();
    let mut seg = pool.allocate(4096).unwrap();
    seg.fill(1);
    let json = serde_json::to_string(&pool.stats()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["allocations"], 1);
    assert_eq!(v["releases"], 0);
    assert_eq!(v["in_use_bytes"], 4096);
    assert_eq!(v["write_after_release"], 0);
    assert!(v["resident_bytes"].as_u64().unwrap() >= 4096, "{json}");
    assert_eq!(v["budget_bytes"], serde_json::Value::Null);
    let classes = v["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 2);
    assert_eq!(classes[0]["size"], 4096);
    assert_eq!(classes[0]["in_use"], 1);
    assert_eq!(classes[1]["size"], 65536);
    drop(seg);
}

#[test]
fn usage_serializes_to_json() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 65536])
        .budget(8 << 20)
        .build()
        .unwrap();
    let seg = pool.allocate(65536).unwrap();
    let v = serde_json::to_value(pool.usage()).unwrap();
    assert_eq!(v["in_use_bytes"], 65536, "{v}");
    assert_eq!(v["budget_bytes"], 8 << 20, "{v}");
    assert_eq!(v["dedicated_segments"], 0, "{v}");
    assert!(v["mapped_bytes"].as_u64().unwrap() >= 65536, "{v}");
    drop(seg);
}
