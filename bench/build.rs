//! Finds `bench_bare.bpf.o`, the baseline program of `bench-netdev`: periscope-receivers'
//! build script compiles every `ebpf/*.bpf.c` and passes its output folder on
//! (`DEP_PERISCOPE_EBPF_OUT_DIR`); the benchmark embeds the object from there, so that the
//! agent, which never loads it, does not carry it. A stub build of the receivers
//! (`PERISCOPE_EBPF_STUB=1`) passes no folder: then neither is there an object here.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(periscope_ebpf_stub)");
    println!("cargo::rerun-if-env-changed=DEP_PERISCOPE_EBPF_OUT_DIR");
    match std::env::var("DEP_PERISCOPE_EBPF_OUT_DIR") {
        Ok(dir) => println!("cargo::rustc-env=PERISCOPE_EBPF_OUT_DIR={dir}"),
        Err(_) => println!("cargo::rustc-cfg=periscope_ebpf_stub"),
    }
}
