//! The access gate of mapped files, in the fence form the process chooses (`membarrier` where
//! the kernel has it). The scenarios are in `fs_gate_support`.

mod common;
mod fs_gate_support;

#[test]
fn a_cut_waits_for_a_running_access() {
    fs_gate_support::a_cut_waits_for_a_running_access();
}

#[test]
fn a_cut_waits_for_every_thread_inside() {
    fs_gate_support::a_cut_waits_for_every_thread_inside();
}

#[test]
fn nested_accesses_on_two_files() {
    fs_gate_support::nested_accesses_on_two_files();
}

#[test]
fn a_nested_access_enters_while_a_cut_of_its_file_waits() {
    fs_gate_support::a_nested_access_enters_while_a_cut_of_its_file_waits();
}

#[test]
fn reads_from_many_threads_race_cuts_and_growth_without_faults() {
    fs_gate_support::reads_from_many_threads_race_cuts_and_growth_without_faults();
}

#[test]
fn nested_reads_of_a_file_being_cut_never_fault() {
    fs_gate_support::nested_reads_of_a_file_being_cut_never_fault();
}
