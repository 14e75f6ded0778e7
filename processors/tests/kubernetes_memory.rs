//! What the Kubernetes source's store holds per 1,000 pods, measured by an allocator that
//! counts live bytes (the pods as the API sends them are built before counting starts and are
//! not kept by the store). Prints the numbers docs/configuration.md quotes and fails if they
//! grow past a bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use globset::{Glob, GlobSetBuilder};
use k8s_openapi::api::core::v1::{Pod, Service};
use periscope_processors::identity::kubernetes::{Extras, Store};
use periscope_testkit::kube_api::{pod, service};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NODE: &str = "node-a";

/// 1,000 pods as a cluster has them: 20 namespaces, Deployments of 5 replicas, two
/// containers each, five labels, an address each; `local` of them on this node.
fn pods(local: usize) -> Vec<Pod> {
    (0..1000u32)
        .map(|n| {
            let deployment = format!("service-{}", n / 5);
            let rs = format!("{deployment}-7d9f8b6c5");
            let (a, b) = (format!("{:064x}", n * 2), format!("{:064x}", n * 2 + 1));
            let node = if (n as usize) < local { NODE } else { "node-b" };
            let mut p = pod(
                &format!("namespace-{}", n % 20),
                &format!("{rs}-{n:05}"),
                &format!("{n:08x}-1111-2222-3333-444455556666"),
                node,
                Some(&format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)),
                Some(("ReplicaSet", &rs)),
                &[&a, &b],
            );
            let labels = &mut p["metadata"]["labels"];
            labels["pod-template-hash"] = "7d9f8b6c5".into();
            labels["app.kubernetes.io/name"] = deployment.clone().into();
            labels["app.kubernetes.io/version"] = "1.4.2".into();
            labels["team"] = "payments".into();
            serde_json::from_value(p).expect("a Pod")
        })
        .collect()
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Live bytes `f` leaves behind.
fn held(f: impl FnOnce()) -> isize {
    let before = live();
    f();
    live() - before
}

#[test]
fn memory_per_thousand_pods() {
    let node_pods = pods(1000);
    let mut bare = Store::new(NODE, Extras::default());
    let local = held(|| {
        for p in &node_pods {
            bare.apply_pod(p, false);
        }
    });
    assert_eq!(bare.pods(), 1000);

    let mut b = GlobSetBuilder::new();
    b.add(Glob::new("app.kubernetes.io/*").expect("glob"));
    let extras = Extras {
        labels: Some(b.build().expect("globs")),
        annotations: None,
    };
    let mut labelled = Store::new(NODE, extras);
    let with_labels = held(|| {
        for p in &node_pods {
            labelled.apply_pod(p, false);
        }
    });

    // Peers: 1,000 pods of other nodes and 300 Services.
    let remote = pods(0);
    let services: Vec<Service> = (0..300u32)
        .map(|n| {
            serde_json::from_value(service(
                &format!("namespace-{}", n % 20),
                &format!("service-{n}"),
                &format!("{n:08x}-5555-2222-3333-444455556666"),
                &format!("10.96.{}.{}", n >> 8, n & 255),
            ))
            .expect("a Service")
        })
        .collect();
    let mut peers = Store::new(NODE, Extras::default());
    let peer_pods = held(|| {
        for p in &remote {
            peers.apply_pod(p, true);
        }
    });
    let peer_services = held(|| {
        for s in &services {
            peers.apply_service(s);
        }
    });
    assert_eq!(peers.peers(), 1300);
    assert_eq!(peers.pods(), 0);

    eprintln!(
        "per 1,000 pods: this node's {} KiB (with 2 labels each {} KiB); peers: 1,000 pods of \
         other nodes {} KiB, 1,000 Services {} KiB",
        local / 1024,
        with_labels / 1024,
        peer_pods / 1024,
        peer_services * 10 / 3 / 1024
    );
    // Bounds: what the store holds per pod must stay small (a pod as the API sends it is
    // 3-10 KiB of JSON).
    assert!(
        local < 900 * 1024,
        "{local} bytes for 1,000 pods of this node"
    );
    assert!(with_labels < 1200 * 1024, "{with_labels} bytes with labels");
    assert!(peer_pods < 550 * 1024, "{peer_pods} bytes for 1,000 peers");
    drop((bare, labelled, peers));
}
