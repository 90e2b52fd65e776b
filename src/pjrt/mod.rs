//! PJRT runtime: loads a PJRT plugin (XLA CPU, libtpu, CUDA) through the C API, creates clients, moves
//! buffers, compiles StableHLO and executes it, including SPMD over several devices.
//!
//! Layering: `sys` (bindgen output, committed) -> [`Plugin`] (dlopen, version, `call!` with the
//! `struct_size` gate) -> [`Client`] -> [`Device`] / [`Buffer`] / [`LoadedExecutable`] / [`Event`].
//! Every object that can call into the plugin holds an `Arc` of what it needs, so buffers and
//! executables are destroyed before their client, and plugins are never unloaded.
//!
//! Facts behind the design (struct sizes, aborts to avoid, SPMD argument order) are in
//! `shared/reference/pjrt.md` and `pjrt-features.md`.

#[macro_use]
mod plugin;

pub mod sys;

mod buffer;
mod client;
mod compiled;
mod device;
mod discovery;
mod error;
mod event;
mod executable;
mod hlo_text;
mod options;
pub mod proto;
mod topology;

pub use buffer::{Buffer, HostElement};
pub use client::{open_client, Client, ClientOptions};
pub use compiled::Executable;
pub use device::Device;
pub use discovery::{cpu_plugin_cache_dir, locate_plugin, python_site_dirs, Hardware, CPU_PLUGIN_PACKAGE, CPU_PLUGIN_VERSION, LIBTPU_VERSION};
pub use error::{Error, ErrorCode, Result};
pub use event::Event;
pub use executable::{LoadedExecutable, MemoryStats};
pub use options::{parse_xla_flags, CompileOptions};
pub use plugin::{tpu_chips_attached, ApiVersion, Plugin, Value};
pub use topology::{slice_options, DeviceInfo, Topology, TopologyOption};

#[cfg(test)]
mod tests {
    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Plugin>();
        send_sync::<super::Client>();
        send_sync::<super::Device>();
        send_sync::<super::Buffer>();
        send_sync::<super::LoadedExecutable>();
        send_sync::<super::Event>();
    }
}
