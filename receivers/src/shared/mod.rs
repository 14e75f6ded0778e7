//! What receivers of different kinds stand on: the embedded eBPF objects and the records they
//! share with user space ([`ebpf`]), what the kernel and this process allow ([`kernel`]),
//! network namespaces and their devices ([`netns`]), the DNS message parser ([`dns`]), and
//! giving memory back after loads ([`memory`]).

pub mod dns;
pub mod ebpf;
pub mod kernel;
pub mod memory;
pub mod netns;
