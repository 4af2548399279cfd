//! Empty library target: lets the agent name this crate as a build
//! dependency (so cargo rebuilds the agent when it changes), as aya-template
//! does. The XDP program itself is the `nat-pmp-ebpf` binary.
#![no_std]
