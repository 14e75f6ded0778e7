//! The latency processor when namespaces go away.

use super::*;

#[test]
fn series_of_a_gone_namespace_retire_after_one_grace_collect() {
    let namespaces = periscope_pipeline::NamespaceTable::default();
    let mut p = processor(config()).with_namespaces(namespaces.clone());
    let pod = NetnsId {
        inode: 4026532000,
        cookie: 7,
    };
    namespaces.insert(pod, Default::default());
    feed(&mut p, &[established(1, SocketHook::Sockops, 3 * MS, 500)]);
    assert!(p.series_len() > 0);
    namespaces.retire(&pod);
    flush(&mut p);
    assert!(p.series_len() > 0, "a grace collect first");
    assert!(!flush(&mut p).is_empty(), "the last points");
    assert_eq!(p.series_len(), 0, "retired");
}
