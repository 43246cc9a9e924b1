//! The access gate in its fallback form: full fences on both sides, as on a kernel or in a
//! sandbox without `membarrier(2)`. One test in this binary, so the form is chosen before any
//! mapped file is touched.

mod common;
mod fs_gate_support;

#[test]
fn every_gate_scenario_with_fences_instead_of_membarrier() {
    assert!(segpool::fs::gates_without_membarrier());
    assert!(!segpool::fs::gate_uses_membarrier());
    fs_gate_support::all();
    assert!(!segpool::fs::gate_uses_membarrier());
}
