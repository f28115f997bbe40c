//! Runs the other suites' guards to completion, then checks the machine:
//! `cargo xtask test` additionally checks for leftovers of every process
//! after the whole run.
use netns_harness as h;

#[test]
fn nothing_of_this_process_is_left() {
    h::require_root();
    {
        let a = h::Netns::new().unwrap();
        let _c = h::Cgroup::new().unwrap().child("x").unwrap();
        let _p = h::PinRoot::new().unwrap();
        h::veth(&a, ("x0", &[]), &h::Netns::new().unwrap(), ("x1", &[])).unwrap();
    }
    assert_eq!(h::leftovers(), Vec::<String>::new());
}
